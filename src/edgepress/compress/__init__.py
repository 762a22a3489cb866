"""Compression: training-time (training/: fine-tune, distill), structural (pruning/) and post-training quantization (quantization/)."""
