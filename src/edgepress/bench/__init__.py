"""Benchmarks of compressed models on targets (cpu, cuda, ssh, emulated arm64): timing, the standalone runner, reports and the gate."""
