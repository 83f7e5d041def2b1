"""An edge site offline for a day, end to end: the server's uncertain images spooled on disk within the spool's
caps and delivered each once when S3 returns, across a restart; the store's outages are real (a port that
accepts and never answers, moto stopped)."""

from __future__ import annotations

import base64
import statistics
import time
from pathlib import Path
from typing import Any

import requests

from edgeservers.data_loop.spool import EVICTED
from edgeservers.data_loop.uncertain import DROPPED, UPLOADED
from tests.support.harness import wait_for
from tests.support.hostile import CHART_ENV
from tests.support.paths import MOBILENET_V2, image_bytes
from tests.support.services import Gate
from tests.support.spool import on_disk, versioned, versions

PHOTOS = ("parrot.jpg", "cat.bmp", "bird.bmp")


# --- an offline day, end to end --------------------------------------------------------------------------

MAX_FILES = 40
BUCKET = "offline-site"


def prometheus(server, name: str) -> float:
    text = requests.get(f"http://127.0.0.1:{server.metrics_port}/prometheus", timeout=10).text
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + "{"))


def predict(server, request_ids: list[str]) -> list[float]:
    """One uncertain REST prediction per id (photos in turn); the seconds each took."""
    seconds = []
    for i, request_id in enumerate(request_ids):
        body: dict[str, Any] = {
            "binData": base64.b64encode(image_bytes(PHOTOS[i % 3])).decode(),
            "meta": {"tags": {"request_id": request_id}},
        }
        start = time.perf_counter()
        reply = requests.post(server.url + "/api/v1.0/predictions", json=body, timeout=30)
        seconds.append(time.perf_counter() - start)
        assert reply.status_code == 200 and reply.json()["meta"]["tags"]["uncertain"] is True, reply.text
    return seconds


def held(directory: Path) -> set[str]:
    """The request ids the spool holds, after checking it is within its caps."""
    items = on_disk(directory)
    assert len(items) <= MAX_FILES
    return {item.sidecar["request_id"] for item in items.values()}


def test_an_offline_day_keeps_the_hard_examples_within_the_caps_and_delivers_each_once(
    start_server, s3_server, tmp_path
):
    """S3 behind a port that accepts and never answers, then stopped across a restart (the new server with a gRPC
    worker too: two processes upload from the spool); then back. Predictions keep their latency throughout
    (measured against S3 up, last), the spool stays within its caps, what it evicts is counted, and when S3
    returns every image it held arrives with its sidecar, each written once, and the spool is empty."""
    versioned(s3_server, BUCKET)
    directory = tmp_path / "spool"
    params = {
        "model_uri": str(MOBILENET_V2),
        "confidence_threshold": 0.999,  # every photo is uncertain
        "uncertain_store": f"s3://{BUCKET}/frames/",
        "uncertain_spool_dir": str(directory),
        "uncertain_spool_max_files": MAX_FILES,
        "metrics_interval": 0.0,
    }
    hole = Gate(s3_server.server.get_host_and_port())
    hole.mode = "blackhole"
    first = start_server("TFLiteServer", env={**CHART_ENV, **s3_server.env, "AWS_ENDPOINT_URL": hole.url}, **params)
    p50 = {"S3 a black hole": statistics.median(predict(first, [f"hole-{i}" for i in range(100)]))}
    wait_for(lambda: prometheus(first, EVICTED) == 100 - len(held(directory)), 30, "evictions counted")
    assert prometheus(first, DROPPED) == 0

    with s3_server.outage():
        first.stop()
        hole.close()
        assert len(held(directory)) == MAX_FILES
        second = start_server(
            "TFLiteServer", env={**CHART_ENV, "GRPC_WORKERS": "1", **s3_server.env}, **params
        )  # straight to the stopped S3: connections refused
        p50["S3 stopped"] = statistics.median(predict(second, [f"stopped-{i}" for i in range(100)]))
        wait_for(lambda: prometheus(second, EVICTED) == MAX_FILES + 100 - len(held(directory)), 30, "evictions")
        kept = held(directory)
        assert len(kept) == MAX_FILES and any(k.startswith("stopped-") for k in kept)

    wait_for(lambda: not on_disk(directory), 90, "the spool emptied once S3 was back")
    sent_up = [f"up-{i}" for i in range(30)]
    p50["S3 up"] = statistics.median(predict(second, sent_up))
    wait_for(lambda: len(versions(s3_server, BUCKET)) == 2 * (MAX_FILES + 30), 60, "uploads while S3 is up")
    written = versions(s3_server, BUCKET)
    assert set(written.values()) == {1}, {k: n for k, n in written.items() if n > 1}  # nothing written twice
    stems = {k.rsplit(".", 1)[0] for k in written}
    assert len(stems) * 2 == len(written)  # each image with its sidecar
    assert {stem.split("-", 1)[1] for stem in stems} == set(sent_up) | kept
    assert prometheus(second, UPLOADED) == MAX_FILES + 30 and not on_disk(directory)
    for case, seconds in p50.items():  # measured, not asserted beyond "never waits on the store"
        print(f"p50 of an uncertain REST prediction, {case}: {seconds * 1000:.1f} ms")
        assert seconds < 3 * p50["S3 up"] + 0.5, p50
