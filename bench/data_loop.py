"""The data loop's costs, measured with the chart's settings (one REST worker, one thread, gRPC off):

- the latency of uncertain predictions with the uncertain spool while the store is up, stopped, or a port that
  accepts and never answers (and, for reference, with the in-memory queue alone);
- the spool's drain rate once the store is back (images/s, each an image and its sidecar), and how long the
  uploader's backoff took to notice it;
- one spool write (write, fsync, rename, fsync of the directory) on this disk;
- the escalation's overhead: the small edge model's own answers, answers escalated to a bigger model on another
  local server, and answers with the breaker open.

    .venv/bin/python -m bench.data_loop [--requests N] [--spooled N]

A real moto S3 (tests/support/services.py) and real servers (tests/support/harness.py); prints a Markdown table.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import requests

from tests.support.harness import Microservice
from tests.support.hostile import CHART_ENV
from tests.support.paths import ROOT

IMAGES = ROOT / "images"
PHOTOS = ("parrot.jpg", "cat.bmp", "bird.bmp")
SMALL, BIG = ROOT / "models" / "mobilenet_v1_025_quant", ROOT / "models" / "mobilenet_v2_quant"


def start(params: dict[str, Any], env: dict[str, str] | None = None) -> Microservice:
    return Microservice("TFLiteServer", params, {**CHART_ENV, **(env or {})}).start()


def bodies(photos: tuple[str, ...]) -> list[bytes]:
    return [json.dumps({"binData": base64.b64encode((IMAGES / p).read_bytes()).decode()}).encode() for p in photos]


def p50_ms(server: Microservice, photos: tuple[str, ...], n: int) -> float:
    """The median of `n` sequential REST predictions, photos in turn (after 5 not counted)."""
    payloads = bodies(photos)
    url = server.url + "/api/v1.0/predictions"
    headers = {"Content-Type": "application/json"}
    with requests.Session() as session:
        for i in range(5):
            session.post(url, data=payloads[i % len(payloads)], headers=headers, timeout=60)
        seconds = []
        for i in range(n):
            begin = time.perf_counter()
            reply = session.post(url, data=payloads[i % len(payloads)], headers=headers, timeout=60)
            seconds.append(time.perf_counter() - begin)
            assert reply.status_code == 200, reply.text
    return round(statistics.median(seconds) * 1000, 1)


class S3Process:
    """moto's S3 server in a process of its own (the measuring client shares no interpreter with it); `outage`
    stops it, and it comes back on the same port, empty but for the bucket."""

    def __init__(self, bucket: str):
        from tests.support.harness import ServerProcess, free_port, http_ok

        self.bucket, self.port = bucket, free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        command = [str(ROOT / ".venv" / "bin" / "moto_server"), "-H", "127.0.0.1", "-p", str(self.port)]
        self._process = ServerProcess(command, dict(os.environ), name="moto")
        self._ready = lambda: http_ok(self.endpoint + "/moto-api/")
        self.env = {
            "AWS_ACCESS_KEY_ID": "k",
            "AWS_SECRET_ACCESS_KEY": "s",
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_REGION": "us-east-1",
        }

    def start(self) -> S3Process:
        import boto3

        self._process.start(self._ready)
        boto3.client("s3", endpoint_url=self.endpoint, **_keys()).create_bucket(Bucket=self.bucket)
        return self

    def stop(self) -> None:
        self._process.stop()


def _keys() -> dict[str, str]:
    return {"aws_access_key_id": "k", "aws_secret_access_key": "s", "region_name": "us-east-1"}


def counts(server: Microservice) -> str:
    """The server's uploaded / dropped counters, from its Prometheus endpoint."""
    text = requests.get(f"http://127.0.0.1:{server.metrics_port}/prometheus", timeout=10).text

    def total(name: str) -> int:
        return int(sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name + "{")))

    return f"{total('edgeservers_uncertain_uploaded_total')} / {total('edgeservers_uncertain_dropped_total')}"


def spool_rows(n: int, spooled: int) -> list[tuple[str, str]]:
    from edgeservers.data_loop import spool
    from tests.support.services import Gate

    rows = []
    s3 = S3Process("retraining").start()
    every = {"model_uri": str(BIG), "confidence_threshold": 0.999, "uncertain_store": "s3://retraining/u/"}
    try:
        queue_only = start(every, s3.env)
        rows.append(("uncertain prediction p50, in-memory queue, S3 up", f"{p50_ms(queue_only, PHOTOS, n)} ms"))
        time.sleep(5)
        rows.append(("... of which uploaded / dropped (queue full)", counts(queue_only)))
        queue_only.stop()
        with tempfile.TemporaryDirectory(dir=ROOT / ".cache") as tmp:
            directory = Path(tmp) / "spool"
            ready = directory / spool.READY
            params = {**every, "uncertain_spool_dir": str(directory)}
            server = start(params, s3.env)
            rows.append(("uncertain prediction p50, spool, S3 up", f"{p50_ms(server, PHOTOS, n)} ms"))
            while spool.ready_items(ready):
                time.sleep(0.2)
            rows.append(("... of which uploaded / dropped", counts(server)))
            s3.stop()
            rows.append(("uncertain prediction p50, spool, S3 stopped", f"{p50_ms(server, PHOTOS, n)} ms"))
            server.stop()
            hole = Gate(("127.0.0.1", s3.port))
            hole.mode = "blackhole"
            server = start(params, {**s3.env, "AWS_ENDPOINT_URL": hole.url})
            rows.append(("uncertain prediction p50, spool, S3 a black hole", f"{p50_ms(server, PHOTOS, n)} ms"))
            server.stop()
            hole.close()
            for name in spool.ready_items(ready):
                (ready / name).unlink()

            server = start({**params, "uncertain_spool_max_files": spooled}, s3.env)  # S3 still stopped
            p50_ms(server, PHOTOS, spooled)
            while len(spool.ready_items(ready)) < spooled:
                time.sleep(0.2)
            s3.start()
            back, first = time.perf_counter(), None
            while spool.ready_items(ready):
                if first is None and len(spool.ready_items(ready)) < spooled:
                    first = time.perf_counter()
                time.sleep(0.05)
            done = time.perf_counter()
            assert first is not None
            rows.append(("spool drain once S3 is back", f"{spooled / (done - first):.0f} images/s ({spooled} images)"))
            rows.append(("store back -> first upload (the uploader's backoff)", f"{first - back:.1f} s"))
            server.stop()
        rows.append(("one spool write (write, fsync, rename, fsync dir), p50", write_cost()))
    finally:
        s3.stop()
    return rows


def write_cost(n: int = 200) -> str:
    from edgeservers.data_loop import spool
    from edgeservers.data_loop.image_store import ObjectRef
    from edgeservers.data_loop.uncertain import Upload

    image = (IMAGES / "parrot.jpg").read_bytes()
    with tempfile.TemporaryDirectory(dir=ROOT / ".cache") as tmp:  # the checkout's disk, not a tmpfs
        directory = Path(tmp)
        spool.prepare(directory)
        sink = spool.UncertainSpool(ObjectRef("b", ""), directory, 1 << 30, n + 1, 4, lambda key: None)
        seconds = []
        for i in range(n):
            begin = time.perf_counter()
            sink.handle(Upload(image, {"request_id": str(i)}, f"k{i}"))
            seconds.append(time.perf_counter() - begin)
    return f"{statistics.median(seconds) * 1000:.2f} ms ({len(image) // 1024} KiB JPEG)"


def escalation_rows(n: int) -> list[tuple[str, str]]:
    from tests.support.services import Gate

    rows = []
    unsure = ("cat.bmp", "bird.bmp")  # the small model's top scores 0.32, 0.43
    big = start({"model_uri": str(BIG)})
    gate = Gate(("127.0.0.1", big.http_port))
    edge = {"model_uri": str(SMALL), "confidence_threshold": 0.5}
    url = f"{gate.url}/v2/models/mobilenet_v2_1.0_224_quant/infer"
    try:
        for name, params in (
            ("the edge model's own answers (no escalate_url)", edge),
            ("escalated to the bigger model on another local server", {**edge, "escalate_url": url}),
        ):
            server = start(params)
            rows.append((f"unsure photos, {name}, p50", f"{p50_ms(server, unsure, n)} ms"))
            server.stop()
        rows.append(("the same photos asked of the bigger model directly, p50", f"{p50_ms(big, unsure, n)} ms"))
        gate.mode = "blackhole"
        server = start({**edge, "escalate_url": url, "escalate_timeout": 1.0, "escalate_breaker_cooldown": 3600.0})
        rows.append(("unsure photos, escalate_url a black hole, breaker open, p50", f"{p50_ms(server, unsure, n)} ms"))
        server.stop()
    finally:
        gate.close()
        big.stop()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=200, help="predictions per latency case")
    parser.add_argument("--spooled", type=int, default=300, help="images spooled before the drain is timed")
    args = parser.parse_args()
    rows = spool_rows(args.requests, args.spooled) + escalation_rows(args.requests)
    print("| measured | value |\n|---|---|")
    for name, value in rows:
        print(f"| {name} | {value} |")


if __name__ == "__main__":
    main()
