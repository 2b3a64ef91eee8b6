"""Benchmarks and the tooling that runs Trident's peers (perf_analyzer, real Triton)."""
