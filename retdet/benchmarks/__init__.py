"""Benchmark cases run by tools/benchmark.py."""
