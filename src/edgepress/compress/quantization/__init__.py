"""Post-training int8 quantization: ONNX Runtime presets and search, the quantize stage, and the Intel Neural Compressor backend."""
