"""Benchmarks (issue 5): the servers against the runtime's own speed and a naive server. Run `make bench`."""
