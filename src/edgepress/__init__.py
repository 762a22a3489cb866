"""edgepress: compress Transformer text and token classifiers and ship them to ONNX and edge targets."""

__version__ = "0.1.0"
