"""What an in-place model update costs a serving server: swap time, the latency of requests during a swap against the
steady state, and memory before and after the swaps.

    .venv/bin/python -m bench.model_updates                    # S3 (moto), the chart's settings, 8 clients, 3 swaps
    .venv/bin/python -m bench.model_updates --source local --swaps 5 --poll 1 --json

The real `seldon-core-microservice` TFLiteServer with the chart's settings (one REST worker, one thread, gRPC off)
serves models/mobilenet_v2_quant from an S3 object (moto on loopback, model_cache_dir in a temporary directory) or a
local directory, with model_poll_interval `--poll`. `--clients` threads send parrot.jpg over REST without pause
(tests/support/updating.py's Load); after `--steady` seconds the model is replaced by the variant that calls a macaw a
goldfish, then by the original again, and so on `--swaps` times, `--after` seconds apart. Reported:

- prepared: the server's own figure per swap (its log line: fetch, inspect, pool, warm-up), and seen: the put to
  the first new answer (includes waiting for the next look, up to `--poll`);
- latency p50 / p99 / max of the requests started in the steady state, and of those started during a swap (from the
  put to 1 s after the first new answer: the look, the load beside the old pool, the swap and the release);
- PSS of the process tree, and its anonymous part, in the steady state and after the swaps (old pools released).
Time is measured here, never asserted (docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import re
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.launcher import Server, answers_a_photo, print_result, run_from_checkout
from tests.support.harness import process_tree
from tests.support.hostile import CHART_ENV
from tests.support.memory import smaps_rollup
from tests.support.services import start_s3
from tests.support.updating import (
    GOLDFISH,
    MACAW,
    MODEL_FILE,
    Load,
    model_dir,
    model_tar,
    put_model,
    swapped_classes,
)

PREPARED = re.compile(r"model update: version \w+ .* prepared in ([\d.]+) s")


def _memory_mb(pid: int) -> dict[str, float]:
    """PSS of the tree, and its anonymous part (the file-backed part moves with what other processes of the
    machine map: libraries, the page cache)."""
    rollups = [smaps_rollup(p) for p in process_tree(pid)]
    return {field: round(sum(r[field] for r in rollups) / 1024, 1) for field in ("Pss", "Pss_Anon")}


def _percentiles(latencies: list[float]) -> dict[str, float | int]:
    if not latencies:
        return {"requests": 0}
    ms = sorted(1000 * x for x in latencies)
    return {
        "requests": len(ms),
        "p50_ms": round(statistics.median(ms), 1),
        "p99_ms": round(ms[min(len(ms) - 1, int(0.99 * len(ms)))], 1),
        "max_ms": round(ms[-1], 1),
    }


def run(source: str, swaps: int, clients: int, poll: float, steady: float, after: float) -> dict[str, Any]:
    models = {MACAW: MODEL_FILE.read_bytes(), GOLDFISH: swapped_classes("macaw", "goldfish")}
    work = Path(tempfile.mkdtemp(prefix="bench-updates-"))
    s3 = None
    env = dict(CHART_ENV)
    if source == "s3":
        s3 = start_s3()

        def put(label: str) -> None:
            s3.put("bench", {"model.tar.gz": model_tar(models[label])})

        put(MACAW)
        env.update(s3.env, NO_PROXY="127.0.0.1")
        params: dict[str, Any] = {"model_uri": "s3://bench/model.tar.gz", "model_cache_dir": str(work / "cache")}
    else:
        directory = model_dir(work / "model", models[MACAW])

        def put(label: str) -> None:
            put_model(directory, models[label])

        params = {"model_uri": str(directory)}
    server = Server("TFLiteServer", {**params, "model_poll_interval": poll}, env)
    server.start(answers_a_photo)
    try:
        with Load(server.url, clients) as load:
            started = time.monotonic()
            load.first(MACAW, 0.0)
            time.sleep(steady)
            steady_window = (started + 1.0, time.monotonic())
            before = _memory_mb(server.proc.pid)  # type: ignore[union-attr]
            windows, seen = [], []
            label = MACAW
            for _ in range(swaps):
                label = GOLDFISH if label == MACAW else MACAW
                at = time.monotonic()
                put(label)
                answered = load.first(label, at)
                seen.append(round(answered - at, 3))
                windows.append((at, answered + 1.0))
                time.sleep(after)
            swapped = _memory_mb(server.proc.pid)  # type: ignore[union-attr]
        answers = list(load.answers)
        log = server.stderr_tail(1 << 20)
    finally:
        server.stop()
        if s3 is not None:
            s3.server.stop()
        shutil.rmtree(work, ignore_errors=True)

    def latencies(window: tuple[float, float]) -> list[float]:
        return [end - start for start, end, _, _ in answers if window[0] <= start < window[1]]

    return {
        "source": source,
        "swaps": swaps,
        "clients": clients,
        "poll_s": poll,
        "answers": len(answers),
        "non_200": sum(1 for a in answers if a[2] != 200),
        "prepared_s": [float(x) for x in PREPARED.findall(log)],
        "seen_after_put_s": seen,
        "steady": _percentiles(latencies(steady_window)),
        "during_swaps": _percentiles([x for w in windows for x in latencies(w)]),
        "memory_mb": {"steady": before, "after_swaps": swapped},
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", choices=("s3", "local"), default="s3")
    parser.add_argument("--swaps", type=int, default=3)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--poll", type=float, default=0.5, help="model_poll_interval, seconds")
    parser.add_argument("--steady", type=float, default=10.0, help="seconds of steady state before the first swap")
    parser.add_argument("--after", type=float, default=5.0, help="seconds from a new answer to the next swap")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    result = run(args.source, args.swaps, args.clients, args.poll, args.steady, args.after)
    print_result(result, args.json)


if __name__ == "__main__":
    run_from_checkout(main)
