"""ONNX export and the ONNX Runtime helpers that export, quantize and bench share."""
