"""Where a running server's time goes per request: py-spy on the real `seldon-core-microservice` under load.

    .venv/bin/python -m bench.spy [--concurrency 1] [--seconds 8] [--payload json|multipart]

Starts the TFLite server with only `model_uri` set (mobilenet_v2_quant, GUNICORN_THREADS=4, gRPC off),
sends parrot.jpg as REST binData from `--concurrency` clients, and samples every thread of the server
with py-spy (`--rate` per second) while they run. Each sample's innermost frame is put in a category
(inference, image decoding, base64, JSON, HTTP, Flask/Seldon, thread hand-offs...) and the table gives
milliseconds of thread time per request; threads waiting in select or on the request queue are left
out, but a thread waiting for the GIL counts where it waits (py-spy cannot tell). py-spy slows the
server a little: compare the categories with each other, not with bench.defaults.
"""

from __future__ import annotations

import argparse
import collections
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from urllib3 import encode_multipart_formdata

from .launcher import ROOT, Server
from .load import RestClient, rest_image

MODEL = ROOT / "models" / "mobilenet_v2_quant"
IMAGE = ROOT / "images" / "parrot.jpg"

# (category, substrings of a frame "function (file:line)"), first match wins; None: a thread waiting
CATEGORIES: tuple[tuple[str | None, tuple[str, ...]], ...] = (
    (
        None,
        (
            "EpollSelector.select",
            "_PollLikeSelector.select",
            "concurrent/futures/thread.py:81",
            "Condition.wait",
            "connection.py:947",
            "_Supervisor",
            "time.sleep",
        ),
    ),
    ("inference (Interpreter.invoke)", ("Interpreter.invoke", "infer (", "set_tensor", "get_tensor")),
    ("JPEG decoding (cv2.imdecode)", ("decode_image",)),
    (
        "pre- and post-processing",
        ("edgeservers/images.py", "edgeservers/postprocess.py", "edgeservers/runtime.py", "numpy/"),
    ),
    ("base64", ("base64", "b64", "_image_bytes")),
    ("JSON (orjson, value count)", ("Orjson", "orjson", "_count_values", "json")),
    (
        # a thread that woke another (the event loop, a request thread) waits here for the GIL it handed over
        "thread hand-offs: waking, then waiting for the GIL",
        ("concurrent/futures", "call_soon_threadsafe", "_write_to_self", "Queue.", "Semaphore.", "Condition."),
    ),
    ("HTTP: tornado reading and writing", ("tornado/", "http_worker.py", "asyncio/", "socket")),
    ("metrics hand-over to Seldon's Manager", ("multiprocessing/", "metrics.py")),
    ("Flask, werkzeug, Seldon's wrapper", ("flask/", "werkzeug/", "seldon_core/", "seldon_compat.py", "multipart")),
    ("edgeservers' request flow", ("edgeservers/",)),
)
OTHER_THREADS = "threads of the metrics Manager and endpoint"  # not the event loop (MainThread), not rest_N


def category(frame: str) -> str | None:
    for name, keys in CATEGORIES:
        if any(k in frame for k in keys):
            return name
    return "other: " + frame.split(" (")[0]


def profile(concurrency: int, seconds: float, rate: int, payload: str) -> tuple[dict[str, float], int, float]:
    """(ms per request by category, requests answered while sampling, load average)."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    jpeg = IMAGE.read_bytes()
    if payload == "json":
        body, headers = rest_image(jpeg), {"Content-Type": "application/json"}
    else:
        body, content_type = encode_multipart_formdata({"binData": ("parrot.jpg", jpeg)})
        headers = {"Content-Type": content_type}
    server = Server("TFLiteServer", {"model_uri": str(MODEL)}, env={"GUNICORN_THREADS": "4", "GRPC_WORKERS": "0"})

    def client() -> RestClient:
        return RestClient(server.http_port, body, headers=headers)

    server.start(lambda s: client()()[0])
    answered = 0
    stop = threading.Event()

    def drive() -> None:
        nonlocal answered
        c = client()
        while not stop.is_set():
            if c()[0] and not stop.is_set():
                answered += 1
        c.close()

    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "samples.txt"
        try:
            clients = [threading.Thread(target=drive) for _ in range(concurrency)]
            for t in clients:
                t.start()
            time.sleep(1.0)  # warm
            answered = 0
            subprocess.run(
                [
                    spy,
                    "record",
                    "-p",
                    str(server.proc.pid),
                    "-d",
                    str(int(seconds)),
                    "-r",
                    str(rate),
                    "--format",
                    "raw",
                    "-o",
                    str(raw),
                    "--nonblocking",
                    "--threads",
                ],
                check=True,
                capture_output=True,
            )
            done = answered
            stop.set()
            for t in clients:
                t.join()
        finally:
            server.stop()
        per = collections.Counter[str]()
        for line in raw.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            if not stack or not count.isdigit():
                continue
            frames = stack.split(";")
            thread = frames[0].rpartition(": ")[2]
            name = category(frames[-1])
            if name and thread != "MainThread" and not thread.startswith("rest_"):
                name = OTHER_THREADS
            if name:
                per[name] += int(count)
    ms = {name: 1000.0 * n / rate / max(1, done) for name, n in per.most_common()}
    return ms, done, os.getloadavg()[0]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=8)
    parser.add_argument("--rate", type=int, default=250)
    parser.add_argument("--payload", choices=["json", "multipart"], default="json")
    args = parser.parse_args()
    ms, done, load = profile(args.concurrency, args.seconds, args.rate, args.payload)
    print(
        f"TFLiteServer, only model_uri, GUNICORN_THREADS=4; parrot.jpg as {args.payload} binData, {args.concurrency} "
        f"client(s); {done} requests in {args.seconds:g} s under py-spy; load average {load:.2f}\n"
    )
    print("| where (innermost frame) | thread ms per request |\n|---|---:|")
    for name, value in ms.items():
        print(f"| {name} | {value:.2f} |")
    print(f"| **total** | **{sum(ms.values()):.2f}** |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
