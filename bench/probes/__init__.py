"""Probes: one-off measurements whose findings docs/benchmarks.md writes up (bench/README.md lists them)."""
