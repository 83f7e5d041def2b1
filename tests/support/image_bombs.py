"""Hostile images (bombs whose headers declare huge sizes) for tests/test_image_limits.py
and for measuring a server by hand: `python -m bench.hostile` prints, per input, the status, the answer
time and the peak PSS of the whole process tree while it ran.

Standard library + numpy/OpenCV only (the encoders here never decode what they build).
"""

from __future__ import annotations

import base64
import struct
import time
import zlib
from collections.abc import Callable
from typing import Any

from bench.hostile import PeakPss


def jpeg_bomb(width: int, height: int) -> bytes:
    """A tiny (about 330 bytes) baseline JPEG whose frame header declares width x height pixels.

    An 8 x 8 grey JPEG with its SOF0 dimensions rewritten: a decoder that trusts the header allocates
    width x height pixels and fills them in from the few bytes of scan data.
    """
    import cv2
    import numpy as np

    ok, encoded = cv2.imencode(".jpg", np.zeros((8, 8), np.uint8), [cv2.IMWRITE_JPEG_QUALITY, 10])
    assert ok
    data = bytearray(encoded.tobytes())
    i = 2
    while i + 4 <= len(data):
        marker, length = data[i + 1], int.from_bytes(data[i + 2 : i + 4], "big")
        if marker == 0xC0:  # SOF0: length(2) precision(1) height(2) width(2)
            data[i + 5 : i + 9] = struct.pack(">HH", height, width)
            return bytes(data)
        i += 2 + length
    raise AssertionError("no SOF0 in OpenCV's JPEG")


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def png_bomb(width: int, height: int) -> bytes:
    """A real, complete PNG of width x height black pixels (1-bit grey, so a few tens of KB compressed):
    every byte of it is valid, and decoding it as colour takes width x height x 3 bytes."""
    row = b"\x00" * (1 + (width + 7) // 8)  # filter byte 0 + the packed bits of one row
    compressor = zlib.compressobj(9)
    chunks = [compressor.compress(row * 1000) for _ in range(height // 1000)]
    chunks.append(compressor.compress(row * (height % 1000)))
    chunks.append(compressor.flush())
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", b"".join(chunks))
        + _png_chunk(b"IEND", b"")
    )


def bmp_header(width: int, height: int, bits: int = 24) -> bytes:
    """The 54-byte header of a BMP (BITMAPINFOHEADER) declaring width x height, followed by one row of pixels
    (a negative height is a top-down bitmap)."""
    row = ((width * bits + 31) // 32) * 4
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, bits, 0, 0, 2835, 2835, 0, 0)
    return b"BM" + struct.pack("<IHHI", 14 + 40 + row * abs(height), 0, 0, 54) + info + b"\x00" * min(row, 1 << 16)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def measure(pid: int, send: Callable[[], Any]) -> dict[str, Any]:
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


def _main() -> None:  # pragma: no cover - a measuring tool
    import argparse
    import json
    import os
    from pathlib import Path

    import grpc
    import requests
    from seldon_core.proto import prediction_pb2, prediction_pb2_grpc

    from bench.launcher import ROOT, Server

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--skip", default="", help="comma-separated case names to skip")
    parser.add_argument("--only", default="", help="comma-separated case names to run")
    cli = parser.parse_args()
    env = {
        "GUNICORN_WORKERS": "1",
        "GUNICORN_THREADS": "1",
        "GRPC_WORKERS": "1",
        "PYTHONPATH": str(ROOT / "tests" / "loopback"),
    }
    server = Server("TFLiteServer", {"model_uri": str(ROOT / "models" / "mobilenet_v2_quant")}, env)
    parrot = (ROOT / "images" / "parrot.jpg").read_bytes()

    def rest_ok() -> bool:
        return requests.post(server.url, json={"binData": b64(parrot)}, timeout=30).status_code == 200

    server.start(lambda s: rest_ok())
    channel = grpc.insecure_channel(server.grpc_target, options=[("grpc.max_send_message_length", 64 << 20)])
    stub = prediction_pb2_grpc.ModelStub(channel)

    def rest_json(data: bytes) -> Callable[[], Any]:
        def send():
            r = requests.post(server.url, json={"binData": b64(data)}, timeout=300)
            return r.status_code, r.text

        return send

    def rest_multipart(data: bytes) -> Callable[[], Any]:
        def send():
            r = requests.post(server.url, files={"binData": ("x", data)}, timeout=300)
            return r.status_code, r.text

        return send

    def grpc_bin(data: bytes) -> Callable[[], Any]:
        def send():
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
    results = {}
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


if __name__ == "__main__":  # pragma: no cover
    _main()
