"""The benchmark suite (bench/README.md lists its modules): `make bench`, `make bench-oip` and the measuring
tools the docs cite. Run from the repository root (`python -m bench.run`); shared helpers come from
tests/support/."""
