"""The shipped defaults' check: the TFLite server with only `model_uri` set and GUNICORN_THREADS=4 against
the in-process pipeline, REST binData, in one run.

    .venv/bin/python -m bench.defaults [--rounds 5] [--requests 60]

p50 at concurrency 1 against the in-process pipeline with the same defaults (one slot, every core), and
throughput at concurrency 4 against the in-process pipeline with pool_size=2, num_threads=1 (the issue's
reference: two single-threaded interpreters). The four measurements take turns, round after round, so a
shared machine's drifting speed slows both sides of each ratio alike; the figures are the medians over
the rounds, and each round's ratios are kept beside them.

At concurrency 4 it also counts the CPU per request, this process's and the server tree's (the server,
idle while the pipeline runs here, and its client here), and how many of the cores were busy: where the
served request costs more than the pipeline is the framework's per-request cost, and cores left idle are
the hand-overs between its threads (docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from typing import Any

from bench import launcher
from bench.launcher import Server
from bench.limits import Limits
from bench.load import RestClient, drive
from tests.support.harness import tree_cpu_s
from tests.support.paths import MOBILENET_V2, image_bytes
from tests.support.payloads import rest_image

MODEL = str(MOBILENET_V2)
CLIENTS = 4  # at once, for the throughput
WARMUP = 2  # unmeasured requests per client thread before the clock starts


def measure(rounds: int = 5, requests: int = 60) -> dict[str, Any]:
    """p50 at concurrency 1 and throughput at 4 of the server with only model_uri (GUNICORN_THREADS=4) and of
    the in-process pipeline (its defaults for p50; two single-threaded interpreters for throughput), in turns."""
    jpeg = image_bytes("parrot.jpg")
    body = rest_image(jpeg)
    alone = Limits("tflite", {"model_uri": MODEL}).pipeline(jpeg)  # defaults: one slot, every core
    shared = Limits("tflite", {"model_uri": MODEL, "pool_size": 2, "num_threads": 1}).pipeline(jpeg)
    server = Server("TFLiteServer", {"model_uri": MODEL}, env={"GUNICORN_THREADS": "4", "GRPC_WORKERS": "0"})
    server.start(lambda s: RestClient(s.http_port, body)()[0])

    def served() -> RestClient:
        return RestClient(server.http_port, body)

    turns: list[dict[str, float]] = []
    errors = 0
    try:
        for _ in range(rounds):
            p50, rps, cpu, busy, ours = {}, {}, {}, {}, {}
            for name, client in (("in_process", alone), ("server", served)):
                run = drive(client, 1, requests, 60).summary()
                p50[name], errors = run["p50_ms"], errors + run["errors"]
            for name, client in (("in_process", shared), ("server", served)):
                here, there, wall = time.process_time(), tree_cpu_s(server.pid), time.perf_counter()
                run = drive(client, CLIENTS, 2 * requests, 60, warmup=WARMUP).summary()
                here, there = time.process_time() - here, tree_cpu_s(server.pid) - there
                wall = time.perf_counter() - wall
                rps[name], errors = run["throughput_rps"], errors + run["errors"]
                made = run["requests"] + CLIENTS * WARMUP  # the CPU counted includes the warm-up requests
                cpu[name], busy[name] = 1000 * (here + there) / made, (here + there) / wall
                ours[name] = 1000 * here / made  # in the server's run, this process is its client
            turns.append(
                {
                    "p50_ms": p50["server"],
                    "in_process_p50_ms": p50["in_process"],
                    "rps_4": rps["server"],
                    "in_process_rps_4": rps["in_process"],
                    "p50_ratio": p50["server"] / p50["in_process"],
                    "rps_4_ratio": rps["server"] / rps["in_process"],
                    "cpu_ms_4": cpu["server"],
                    "client_cpu_ms_4": ours["server"],
                    "in_process_cpu_ms_4": cpu["in_process"],
                    "cores_busy_4": busy["server"],
                    "in_process_cores_busy_4": busy["in_process"],
                }
            )
    finally:
        server.stop()
    result: dict[str, Any] = {k: round(statistics.median(t[k] for t in turns), 2) for k in turns[0]}
    result["rounds"] = [{k: round(v, 2) for k, v in t.items()} for t in turns]
    result["load"] = round(os.getloadavg()[0], 2)
    result["errors"] = errors
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--requests", type=int, default=60, help="per round at concurrency 1 (twice that at 4)")
    parser.add_argument("--root", help="measure the server of another checkout (e.g. an earlier commit's worktree)")
    args = parser.parse_args()
    if args.root:
        launcher.use_checkout(args.root)
    r = measure(args.rounds, args.requests)
    print(
        f"server of {launcher.checkout()}; load average {r['load']:.2f}; mobilenet_v2_quant, parrot.jpg, "
        f"REST binData (JSON); medians of {args.rounds} rounds"
    )
    print(
        f"p50 at concurrency 1: server {r['p50_ms']} ms, in-process {r['in_process_p50_ms']} ms "
        f"-> {r['p50_ratio']:.2f}x (target <= 1.25x; rounds {[t['p50_ratio'] for t in r['rounds']]})"
    )
    print(
        f"throughput at concurrency 4: server {r['rps_4']} req/s, in-process (2 x 1 thread) {r['in_process_rps_4']} "
        f"req/s -> {r['rps_4_ratio']:.2f}x (target >= 0.85x; rounds {[t['rps_4_ratio'] for t in r['rounds']]}); "
        f"errors {r['errors']}"
    )
    print(
        f"CPU per request at concurrency 4: served {r['cpu_ms_4']} ms (its client {r['client_cpu_ms_4']} ms of it), "
        f"in-process {r['in_process_cpu_ms_4']} ms; cores busy {r['cores_busy_4']} against {r['in_process_cores_busy_4']}"
    )


if __name__ == "__main__":
    main()
