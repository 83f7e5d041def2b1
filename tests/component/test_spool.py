"""Uncertain images spooled on disk (uncertain_spool_dir, data_loop/spool.py), in this process, against a real S3
API (moto) or a port nothing listens on: whole items oldest first, the caps, two uploaders sharing one spool, a
store's refusal; the end-to-end offline day is in tests/e2e/test_spool.py, the chart's volume in
tests/kubernetes/test_spool_chart.py."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from edgeservers.data_loop import spool as spool_module
from edgeservers.data_loop.image_store import ObjectRef
from edgeservers.data_loop.spool import EVICTED, UncertainSpool
from edgeservers.data_loop.uncertain import DROPPED, UPLOADED, Upload
from tests.support.harness import wait_for
from tests.support.paths import MOBILENET_V2, image_bytes
from tests.support.services import closed_port
from tests.support.spool import on_disk, versioned, versions

PHOTOS = ("parrot.jpg", "cat.bmp", "bird.bmp")


def spool(directory: Path, store: ObjectRef, counted: list[str], **caps: int) -> UncertainSpool:
    spool_module.prepare(directory)
    sink = UncertainSpool(
        store,
        directory,
        caps.get("max_bytes", 1 << 30),
        caps.get("max_files", 1000),
        caps.get("queue", 64),
        counted.append,
    )
    sink.start()
    return sink


def submit(sink: UncertainSpool, request_id: str, photo: str = "parrot.jpg") -> None:
    assert sink.submit(image_bytes(photo), {"request_id": request_id, "tags": {"request_id": request_id}})


@pytest.fixture
def unreachable(monkeypatch):
    """An S3 endpoint where nothing listens: every upload fails and is retried."""
    for name, value in {"AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s", "AWS_REGION": "us-east-1"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{closed_port()}")


@pytest.fixture
def store(s3_server, monkeypatch):
    for name, value in s3_server.env.items():
        monkeypatch.setenv(name, value)
    return s3_server


# --- the spool's own rules, in this process ---------------------------------------------------------------


def test_items_are_whole_files_oldest_first_and_a_crashed_write_is_cleaned(tmp_path, unreachable):
    directory = tmp_path / "spool"
    (directory / spool_module.TMP).mkdir(parents=True)
    left = directory / spool_module.TMP / "0001-abc-10.item"  # half an item, left by a crash
    left.write_bytes(b'{"key": "x", "sid')
    os.utime(left, (time.time() - 600, time.time() - 600))
    fresh = directory / spool_module.TMP / "0002-def-10.item"  # another process writing right now
    fresh.write_bytes(b"{")
    counted: list[str] = []
    sink = spool(directory, ObjectRef("retraining", "site/"), counted)
    assert not left.exists() and fresh.exists()
    for i, photo in enumerate(PHOTOS * 2):
        submit(sink, f"frame-{i}", photo)
    sink.drain(5.0)  # the queue is flushed to disk at exit; nothing is lost
    items = on_disk(directory)
    assert [item.sidecar["request_id"] for item in items.values()] == [f"frame-{i}" for i in range(6)]
    assert [item.image for item in items.values()] == [image_bytes(p) for p in PHOTOS * 2]
    assert all(
        item.key.startswith("site/") and item.key.endswith(item.sidecar["request_id"]) for item in items.values()
    )
    assert all(spool_module.item_size(name) == len(spool_module.encode(item)) for name, item in items.items())
    assert os.listdir(directory / spool_module.TMP) == [fresh.name] and counted == []


def test_beyond_its_caps_the_oldest_are_evicted_and_counted(tmp_path, unreachable):
    """The oldest item is held by the uploader (retrying an unreachable store) and stays; the next oldest go."""
    counted: list[str] = []
    sink = spool(tmp_path / "files", ObjectRef("retraining", ""), counted, max_files=3)
    for i in range(7):
        submit(sink, f"frame-{i}")
    sink.drain(5.0)
    ids = [item.sidecar["request_id"] for item in on_disk(tmp_path / "files").values()]
    assert len(ids) == 3 and ids[-2:] == ["frame-5", "frame-6"], ids
    assert counted == [EVICTED] * 4

    size = len(spool_module.encode(Upload(image_bytes("cat.bmp"), {"request_id": "x"}, "k")))
    counted.clear()
    sink = spool(tmp_path / "bytes", ObjectRef("retraining", ""), counted, max_bytes=int(size * 2.5))
    for i in range(5):
        submit(sink, f"frame-{i}", "cat.bmp")
    sink.drain(5.0)
    names = spool_module.ready_items(tmp_path / "bytes" / spool_module.READY)
    assert len(names) == 2 and sum(map(spool_module.item_size, names)) <= size * 2.5
    assert counted == [EVICTED] * 3


def test_an_image_larger_than_the_spool_is_dropped_not_written(tmp_path, unreachable):
    counted: list[str] = []
    sink = spool(tmp_path / "s", ObjectRef("retraining", ""), counted, max_bytes=1000)
    submit(sink, "big")
    sink.drain(5.0)
    assert counted == [DROPPED] and on_disk(tmp_path / "s") == {}


def test_two_uploaders_sharing_a_spool_send_each_item_once_and_empty_it(tmp_path, store):
    """What a restarted server finds (items a previous run left) drained by two processes' uploaders at once:
    here two spools in this process, whose flocks exclude each other as two processes' do."""
    versioned(store, "shared")
    directory = tmp_path / "spool"
    spool_module.prepare(directory)
    writer = UncertainSpool(ObjectRef("shared", "f/"), directory, 1 << 30, 1000, 64, lambda key: None)
    for i in range(40):  # written as the writer thread would; no uploader runs
        writer.handle(Upload(image_bytes("parrot.jpg"), {"request_id": f"{i}"}, f"f/frame-{i}"))
    assert len(on_disk(directory)) == 40
    counted: list[str] = []
    for _ in range(2):
        UncertainSpool(ObjectRef("shared", "f/"), directory, 1 << 30, 1000, 64, counted.append).start()
    wait_for(lambda: len(counted) == 40 and not on_disk(directory), 60, "the spool emptied")
    assert counted == [UPLOADED] * 40
    written = versions(store, "shared")
    assert len(written) == 80 and set(written.values()) == {1}  # 40 images and their sidecars, each written once


def test_an_item_the_store_refuses_is_dropped_after_bounded_tries_and_a_bad_file_is_removed(tmp_path, store):
    counted: list[str] = []
    sink = spool(tmp_path / "s", ObjectRef("no-such-bucket", ""), counted)
    (tmp_path / "s" / spool_module.READY / f"{1:020d}-junk-5.item").write_bytes(b"junk!")
    submit(sink, "refused")
    wait_for(lambda: len(counted) == 2, 30, "both dropped")
    assert counted == [DROPPED, DROPPED] and on_disk(tmp_path / "s") == {}


def test_a_spool_dir_that_cannot_be_written_stops_the_server_with_one_line(fail, tmp_path):
    (tmp_path / "a-file").write_text("")
    line = fail(
        "TFLiteServer",
        model_uri=str(MOBILENET_V2),
        confidence_threshold=0.5,
        uncertain_store="s3://retraining/",
        uncertain_spool_dir=str(tmp_path / "a-file" / "spool"),
    )
    assert f"uncertain_spool_dir={tmp_path / 'a-file' / 'spool'}: cannot write there" in line
    line = fail("TFLiteServer", model_uri=str(MOBILENET_V2), uncertain_spool_dir=str(tmp_path))
    assert "uncertain_spool_dir needs uncertain_store" in line


def test_background_counts_beside_request_hand_overs_are_never_lost():
    """The spool's threads count (evicted, uploaded) while requests hand their metrics over, in one process."""
    from seldon_core.metrics import SeldonMetrics

    from edgeservers.seldon import install

    install()
    metrics = SeldonMetrics()

    def hammer() -> None:
        for _ in range(200):
            metrics.update([{"type": "COUNTER", "key": "k", "value": 1}], "predict")

    threads = [threading.Thread(target=hammer) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(v["value"] for k, v in metrics.data[os.getpid()].items() if k[1] == "k") == 600
