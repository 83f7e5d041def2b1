"""Where one REST request's time goes inside the running server, hand-over by hand-over.

    .venv/bin/python -m bench.stages [--requests 300] [--rounds 3] [--concurrency 1]

Starts the TFLite server as bench.defaults does (only `model_uri`, GUNICORN_THREADS=4, gRPC off) with
bench/stage_clock on its PYTHONPATH, which timestamps every request at each hand-over (event loop,
request thread, Seldon's Flask app, predict_raw, back to the loop) without changing the server's code.
parrot.jpg is sent as REST binData by `--concurrency` clients; the in-process pipeline with the same
defaults (bench.defaults' reference for p50) runs in turns with the server, round after round. Prints
the median of each stage, the request thread's CPU time in its parts, the client's p50, and the CPU
time per request of the server's main threads (the event loop, in the process serving REST) and of
every other thread of its processes. `--root` measures another checkout's server with this harness.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
from pathlib import Path
from typing import Any

from bench import launcher
from bench.launcher import Server
from bench.limits import Limits
from bench.load import RestClient, drive
from tests.support.harness import process_tree
from tests.support.paths import MOBILENET_V2, image_bytes
from tests.support.payloads import rest_image

MODEL = str(MOBILENET_V2)
STAGE_CLOCK = Path(__file__).parent / "stage_clock"
STAGES = (
    "body read (headers to last byte)",
    "to the request coroutine",
    "hand-over to a request thread",
    "Flask and Seldon before predict_raw",
    "predict_raw (decode, infer, answer)",
    "Seldon and Flask after predict_raw",
    "hand-over back to the event loop",
    "answer written to the socket",
)
CPU_PARTS = ("before predict_raw", "predict_raw", "after predict_raw")


def thread_cpu(pid: int) -> tuple[float, float]:
    """CPU seconds so far of the main threads of process `pid` and its children (the event loop of the one
    serving REST; the others mostly wait) and of all their other threads."""
    tick = os.sysconf("SC_CLK_TCK")
    main = other = 0.0
    for process in process_tree(pid):
        try:
            tids = os.listdir(f"/proc/{process}/task")
        except OSError:  # the process ended
            continue
        for tid in tids:
            try:
                fields = Path(f"/proc/{process}/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:  # the thread ended
                continue
            seconds = (int(fields[11]) + int(fields[12])) / tick
            if int(tid) == process:
                main += seconds
            else:
                other += seconds
    return main, other


def measure(requests: int, rounds: int, concurrency: int) -> dict[str, Any]:
    jpeg = image_bytes("parrot.jpg")
    body = rest_image(jpeg)
    alone = Limits("tflite", {"model_uri": MODEL}).pipeline(jpeg)
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "stages.txt"
        env = {
            "GUNICORN_THREADS": "4",
            "GRPC_WORKERS": "0",
            "PYTHONPATH": f"{STAGE_CLOCK}{os.pathsep}{launcher.checkout()}",
            "EDGESERVERS_STAGE_CLOCK": str(log),
        }
        server = Server("TFLiteServer", {"model_uri": MODEL}, env=env)
        server.start(lambda s: RestClient(s.http_port, body)()[0])
        client_p50, in_process_p50, main_ms, other_ms = [], [], [], []
        try:
            for _ in range(rounds):
                in_process_p50.append(drive(alone, concurrency, requests, 120).summary()["p50_ms"])
                before = thread_cpu(server.pid)
                run = drive(lambda: RestClient(server.http_port, body), concurrency, requests, 120).summary()
                after = thread_cpu(server.pid)
                client_p50.append(run["p50_ms"])
                main_ms.append(1000 * (after[0] - before[0]) / run["requests"])
                other_ms.append(1000 * (after[1] - before[1]) / run["requests"])
        finally:
            server.stop()
        rows = [[float(v) for v in line.split()] for line in log.read_text().splitlines()]
    if not rows:
        raise SystemExit(f"no request was timed: is {STAGE_CLOCK} still in step with edgeservers.seldon.rest_worker?")
    stages = [statistics.median(r[i + 1] - r[i] for r in rows) * 1000 for i in range(len(STAGES))]
    cpu = [statistics.median(r[9 + i] for r in rows) * 1000 for i in range(len(CPU_PARTS))]
    return {
        "timed": len(rows),
        "stages_ms": dict(zip(STAGES, stages)),
        "request_thread_cpu_ms": dict(zip(CPU_PARTS, cpu)),
        "inside_ms": statistics.median((r[8] - r[0]) * 1000 for r in rows),
        "client_p50_ms": statistics.median(client_p50),
        "in_process_p50_ms": statistics.median(in_process_p50),
        "event_loop_cpu_ms": statistics.median(main_ms),
        "other_threads_cpu_ms": statistics.median(other_ms),
        "load": round(os.getloadavg()[0], 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300, help="per round, server and in-process each")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--root", help="measure the server of another checkout (e.g. an earlier commit's worktree)")
    args = parser.parse_args()
    if args.root:
        launcher.use_checkout(args.root)
    r = measure(args.requests, args.rounds, args.concurrency)
    print(
        f"TFLiteServer of {launcher.checkout()}, only model_uri, GUNICORN_THREADS=4, gRPC off; parrot.jpg as JSON binData, "
        f"{args.concurrency} client(s); medians of {r['timed']} timed requests; load average {r['load']}\n"
    )
    print("| stage | ms (median) |\n|---|---:|")
    for name, ms in r["stages_ms"].items():
        print(f"| {name} | {ms:.3f} |")
    inside, p50 = r["inside_ms"], r["client_p50_ms"]
    print(f"| inside the server (headers to written) | {inside:.2f} |")
    print(f"| outside: sending the request, reading the answer | {p50 - inside:.2f} |")
    print(f"| **client p50** (in-process pipeline {r['in_process_p50_ms']:.2f}) | **{p50:.2f}** |")
    cpu = ", ".join(f"{k} {v:.3f}" for k, v in r["request_thread_cpu_ms"].items())
    print(f"\nrequest thread CPU ms: {cpu}")
    print(
        f"CPU ms per request: main threads (the REST process's is the event loop) {r['event_loop_cpu_ms']:.2f}, "
        f"all other threads {r['other_threads_cpu_ms']:.2f}"
    )


if __name__ == "__main__":
    main()
