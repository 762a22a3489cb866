"""Benchmarks of compressed models: the standalone runner and, later, targets, reports and the gate."""
