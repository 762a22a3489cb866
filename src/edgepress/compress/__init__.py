"""Training-time compression stages: finetune (and, later, distill and prune) plus post-training quantization."""
