"""Benchmark scripts: each prints numbers; docs/benchmarks.md records them with the command."""
