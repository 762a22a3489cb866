"""Structured pruning: importance scores, the plan, the surgery on the model, vocabulary trimming, and the prune stage."""
