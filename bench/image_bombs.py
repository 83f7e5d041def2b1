"""What image bombs cost a server (tests/support/image_bombs.py builds them): per input, the status, the answer
time and the peak PSS of the whole process tree while it ran, and whether the next prediction succeeds.

    .venv/bin/python -m bench.image_bombs [--only NAME,...] [--skip NAME,...]   # HOSTILE_OUT=file: JSON there

TFLiteServer with the chart's worker settings plus one gRPC worker. docs/security.md holds the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import requests
from seldon_core.proto import prediction_pb2, prediction_pb2_grpc

from bench.launcher import Server
from tests.support.image_bombs import bmp_header, jpeg_bomb, png_bomb
from tests.support.memory import PeakPss
from tests.support.paths import MOBILENET_V2, image_bytes
from tests.support.payloads import b64

Send = Callable[[], tuple[Any, str]]


def measure(pid: int, send: Send) -> dict[str, Any]:
    """Run `send()` (returning (status, text)) while sampling memory: status, answer seconds, peak PSS."""
    with PeakPss(pid) as memory:
        started = time.perf_counter()
        try:
            status, text = send()
        except Exception as e:  # a dropped connection is an answer too
            status, text = "error", f"{type(e).__name__}: {e}"
        seconds = time.perf_counter() - started
    return {
        "status": status,
        "seconds": round(seconds, 2),
        "pss_before_mb": memory.before,
        "pss_peak_mb": memory.peak,
        "growth_mb": memory.growth,
        "answer": str(text)[:300],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--skip", default="", help="comma-separated case names to skip")
    parser.add_argument("--only", default="", help="comma-separated case names to run")
    cli = parser.parse_args()
    env = {"GUNICORN_WORKERS": "1", "GUNICORN_THREADS": "1", "GRPC_WORKERS": "1"}
    server = Server("TFLiteServer", {"model_uri": str(MOBILENET_V2)}, env, loopback=True)
    parrot = image_bytes("parrot.jpg")

    def rest_ok() -> bool:
        return requests.post(server.url, json={"binData": b64(parrot)}, timeout=30).status_code == 200

    server.start(lambda s: rest_ok())
    channel = grpc.insecure_channel(server.grpc_target, options=[("grpc.max_send_message_length", 64 << 20)])
    stub = prediction_pb2_grpc.ModelStub(channel)

    def rest_json(data: bytes) -> Send:
        def send() -> tuple[Any, str]:
            r = requests.post(server.url, json={"binData": b64(data)}, timeout=300)
            return r.status_code, r.text

        return send

    def rest_multipart(data: bytes) -> Send:
        def send() -> tuple[Any, str]:
            r = requests.post(server.url, files={"binData": ("x", data)}, timeout=300)
            return r.status_code, r.text

        return send

    def grpc_bin(data: bytes) -> Send:
        def send() -> tuple[Any, str]:
            try:
                reply = stub.Predict(prediction_pb2.SeldonMessage(binData=data), timeout=300)
                return "OK", str(reply)[:200]
            except grpc.RpcError as e:
                return e.code().name, e.details()

        return send

    cases = {
        "jpeg 10000x10000 REST JSON": rest_json(jpeg_bomb(10000, 10000)),
        "jpeg 10000x10000 REST multipart": rest_multipart(jpeg_bomb(10000, 10000)),
        "jpeg 10000x10000 gRPC": grpc_bin(jpeg_bomb(10000, 10000)),
        "png 20000x20000 REST JSON": rest_json(png_bomb(20000, 20000)),
        "jpeg 60000x60000 REST JSON": rest_json(jpeg_bomb(60000, 60000)),
        "bmp header 20000x20000 REST JSON": rest_json(bmp_header(20000, 20000)),
        "gRPC binData 20 MiB": grpc_bin(b"\xff" * (20 << 20)),
    }
    only = [c for c in cli.only.split(",") if c]
    results: dict[str, dict[str, Any]] = {}
    for name, send in cases.items():
        if name in cli.skip.split(",") or (only and name not in only):
            continue
        if not server.proc or server.proc.poll() is not None:
            results[name] = {"status": f"server gone (exit {server.proc.returncode if server.proc else None})"}
            continue
        result = measure(server.proc.pid, send)
        try:
            result["next_prediction_ok"] = rest_ok()
        except Exception as e:
            result["next_prediction_ok"] = f"{type(e).__name__}"
        results[name] = result
        print(name, json.dumps(result), flush=True)
    server.stop()
    out = Path(os.environ.get("HOSTILE_OUT", "/dev/stdout"))
    out.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
