"""Issue 13's throughput check: the TFLite server with only `model_uri` set and GUNICORN_THREADS=4 against
the in-process pipeline with two single-threaded interpreters, REST binData, in one run.

    .venv/bin/python -m bench.defaults [--requests N]

Prints p50 at concurrency 1 against the in-process pipeline with the same defaults, and throughput at
concurrency 4 against the in-process pipeline with pool_size=2, num_threads=1 (the issue's reference).
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from bench.launcher import ROOT, Server
from bench.limits import Limits
from bench.load import RestClient, drive, rest_image

MODEL = str(ROOT / "models" / "mobilenet_v2_quant")


def measure(requests: int = 300) -> dict[str, Any]:
    """p50 at concurrency 1 and throughput at 4: the server with only model_uri (GUNICORN_THREADS=4) against the
    in-process pipeline (its defaults for p50; two single-threaded interpreters for throughput), in one run."""
    jpeg = (ROOT / "images" / "parrot.jpg").read_bytes()
    body = rest_image(jpeg)
    alone = Limits("tflite", {"model_uri": MODEL}).pipeline(jpeg)  # defaults: one slot, every core
    shared = Limits("tflite", {"model_uri": MODEL, "pool_size": 2, "num_threads": 1}).pipeline(jpeg)
    in_process = {1: drive(alone, 1, requests, 120).summary(), 4: drive(shared, 4, requests, 120).summary()}
    server = Server("TFLiteServer", {"model_uri": MODEL}, env={"GUNICORN_THREADS": "4", "GRPC_WORKERS": "0"})
    server.start(lambda s: RestClient(s.http_port, body)()[0])
    try:
        served = {c: drive(lambda: RestClient(server.http_port, body), c, requests, 120).summary() for c in (1, 4)}
    finally:
        server.stop()
    return {
        "load": round(os.getloadavg()[0], 2),
        "p50_ms": served[1]["p50_ms"],
        "in_process_p50_ms": in_process[1]["p50_ms"],
        "p50_ratio": round(served[1]["p50_ms"] / in_process[1]["p50_ms"], 2),
        "rps_4": served[4]["throughput_rps"],
        "in_process_rps_4": in_process[4]["throughput_rps"],
        "rps_4_ratio": round(served[4]["throughput_rps"] / in_process[4]["throughput_rps"], 2),
        "errors": served[1]["errors"] + served[4]["errors"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300)
    r = measure(parser.parse_args().requests)
    print(f"load average {r['load']:.2f}; mobilenet_v2_quant, parrot.jpg, REST binData (JSON)")
    print(
        f"p50 at concurrency 1: server {r['p50_ms']} ms, in-process {r['in_process_p50_ms']} ms "
        f"-> {r['p50_ratio']:.2f}x (target <= 1.25x)"
    )
    print(
        f"throughput at concurrency 4: server {r['rps_4']} req/s, in-process (2 x 1 thread) {r['in_process_rps_4']} "
        f"req/s -> {r['rps_4_ratio']:.2f}x (target >= 0.85x); errors {r['errors']}"
    )


if __name__ == "__main__":
    main()
