# Benchmarks: the servers against the runtime in-process and a naive server, in one run.
# `make bench` writes bench/results/bench.{json,md,png} (docs/benchmarks.md says how long the committed run took);
# `make bench-smoke` is the same code with a few requests per case, one model and six payloads,
# into a scratch directory (tests/e2e/test_bench_smoke.py runs it in `make test`). Never a timing assertion.

BENCH_OUT ?= bench/results
BENCH_ARGS ?=

.PHONY: bench bench-smoke

## bench: measure everything, write $(BENCH_OUT)/bench.json, bench.md and bench.png
bench: install
	$(PY) -m bench.run --out $(BENCH_OUT) $(BENCH_ARGS)
	$(PY) -m bench.decode > $(BENCH_OUT)/decode.md && cat $(BENCH_OUT)/decode.md

## bench-smoke: a few requests per case, results in .cache/bench-smoke (not committed)
bench-smoke: install
	$(PY) -m bench.run --smoke --out .cache/bench-smoke
