"""Issue 13's throughput check: the TFLite server with only `model_uri` set and GUNICORN_THREADS=4 against
the in-process pipeline with two single-threaded interpreters, REST binData, in one run.

    .venv/bin/python -m bench.defaults [--requests N]

Prints p50 at concurrency 1 against the in-process pipeline with the same defaults, and throughput at
concurrency 4 against the in-process pipeline with pool_size=2, num_threads=1 (the issue's reference).
"""

from __future__ import annotations

import argparse
import os

from bench.launcher import ROOT, Server
from bench.limits import Limits
from bench.load import RestClient, drive, rest_image

MODEL = str(ROOT / "models" / "mobilenet_v2_quant")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300)
    args = parser.parse_args()
    jpeg = (ROOT / "images" / "parrot.jpg").read_bytes()
    body = rest_image(jpeg)
    alone = Limits("tflite", {"model_uri": MODEL}).pipeline(jpeg)  # defaults: one slot, every core
    shared = Limits("tflite", {"model_uri": MODEL, "pool_size": 2, "num_threads": 1}).pipeline(jpeg)
    in_process = {
        "p50": drive(alone, 1, args.requests, 120).summary(),
        "c4": drive(shared, 4, args.requests, 120).summary(),
    }
    server = Server("TFLiteServer", {"model_uri": MODEL}, env={"GUNICORN_THREADS": "4", "GRPC_WORKERS": "0"})
    server.start(lambda s: RestClient(s.http_port, body)()[0])
    try:
        served = {c: drive(lambda: RestClient(server.http_port, body), c, args.requests, 120).summary() for c in (1, 4)}
    finally:
        server.stop()
    print(f"load average {os.getloadavg()[0]:.2f}; mobilenet_v2_quant, parrot.jpg, REST binData (JSON)")
    print(
        f"p50 at concurrency 1: server {served[1]['p50_ms']} ms, in-process {in_process['p50']['p50_ms']} ms "
        f"-> {served[1]['p50_ms'] / in_process['p50']['p50_ms']:.2f}x (target <= 1.25x)"
    )
    print(
        f"throughput at concurrency 4: server {served[4]['throughput_rps']} req/s, in-process (2 x 1 thread) "
        f"{in_process['c4']['throughput_rps']} req/s -> {served[4]['throughput_rps'] / in_process['c4']['throughput_rps']:.2f}x "
        f"(target >= 0.85x); errors {served[1]['errors'] + served[4]['errors']}"
    )


if __name__ == "__main__":
    main()
