"""In-place model updates (model_poll_interval, edgeservers/core/updates.py) in-process, with real models and a real S3
server (moto): a local model replaced by rename serves without a restart, a version the server cannot serve is
refused once while the old one keeps serving, a cut download resumes; the update parameters are checked at start.
The models (tests/support/updating.py): models/mobilenet_v2_quant (A) and the same network with the classes macaw
and goldfish exchanged in its last layer (B): the same tensors, other answers. Counterpart: e2e/test_model_updates.py
(every serving process, an S3 object replaced under load)."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from edgeservers import storage
from tests.support.paths import MOBILENET_V1
from tests.support.services import Gate, S3Server
from tests.support.updating import (
    GOLDFISH,
    MACAW,
    MODEL_FILE,
    PARROT_PATH,
    A,
    dead_classifier,
    eventually,
    failures,
    model_dir,
    model_info,
    put_model,
    swapped_classes,
    top_label,
    version_of,
)

B = swapped_classes("macaw", "goldfish")
POLL = 0.25  # model_poll_interval here: seconds
BUCKET = "updates"


@pytest.fixture
def updating(load_server) -> Iterator[Callable[..., Any]]:
    """In-process servers with model_poll_interval=POLL and metrics of their own; their updaters stop at the end."""
    started: list[Any] = []

    def start(server_class: str = "TFLiteServer", **params: Any) -> Any:
        server = load_server(server_class, own_metrics=True, model_poll_interval=POLL, **params)
        started.append(server)
        return server

    yield start
    for server in started:
        server.component.model.updater.stop()


# --- a local directory ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("server_class", ["TFLiteServer", "OpenVINOServer"])
def test_a_local_model_replaced_by_rename_serves_in_place(updating, tmp_path, server_class):
    """The file's inode, size and mtime change; its sha256 names the version everywhere the server reports it."""
    directory = model_dir(tmp_path / "model")
    server = updating(server_class, model_uri=str(directory))
    assert top_label(server) == MACAW
    custom = server.get("/api/v1.0/metadata").json()["custom"]
    assert (custom["model_version"], custom["model_source"]) == (version_of(A), "local")

    put_model(directory, B)
    eventually(lambda: top_label(server) == GOLDFISH, "B serves")
    custom = server.get("/api/v1.0/metadata").json()["custom"]  # built at each request: the live version
    assert (custom["model_version"], custom["model_source"]) == (version_of(B), "local")
    oip = server.get("/v2/models/model").json()
    assert oip["versions"] == [version_of(B)] and oip["parameters"]["model_version"] == version_of(B)
    assert server.get(f"/v2/models/model/versions/{version_of(A)}").status_code == 404  # no longer served
    info = eventually(lambda: len(found := model_info(server.prometheus())) == 2 and found, "the gauge's two series")
    assert {v: on for (_, v), on in info.items()} == {version_of(A): 0.0, version_of(B): 1.0}
    assert failures(server.prometheus()) == 0


def test_updates_the_server_cannot_serve_are_refused_once_and_the_old_model_serves(updating, tmp_path, caplog):
    """Another input shape (mobilenet_v1 at 128x128), then a model whose every class scores 0 (model_check_input
    finds its answer empty): each refused with one line and counted once, never tried again while the file stays;
    then a good version serves."""
    directory = model_dir(tmp_path / "model")
    server = updating(model_uri=str(directory), model_check_input=PARROT_PATH)
    caplog.set_level("WARNING", logger="edgeservers.core.updates")

    def refusals() -> list[str]:  # this logger's lines only: other parts of the process log too
        return [r.getMessage() for r in caplog.records if r.name == "edgeservers.core.updates"]

    put_model(directory, next(MOBILENET_V1.glob("*.tflite")).read_bytes())
    eventually(lambda: failures(server.prometheus()) == 1, "the other signature refused")
    (line,) = refusals()
    assert line.startswith(f"model update refused, still serving version {version_of(A)}: version ")
    assert "input uint8 [1, 224, 224, 3]" in line and "input uint8 [1, 128, 128, 3]" in line
    assert "restart the server to serve this one" in line

    put_model(directory, dead_classifier())
    eventually(lambda: failures(server.prometheus()) == 2, "the dead classifier refused")
    assert f"model_check_input {PARROT_PATH}: the answer is empty" in refusals()[-1]
    time.sleep(4 * POLL)  # looks go on: the refused file is not tried again
    assert failures(server.prometheus()) == 2 and len(refusals()) == 2
    assert top_label(server) == MACAW

    put_model(directory, B)
    eventually(lambda: top_label(server) == GOLDFISH, "B serves")
    assert failures(server.prometheus()) == 2


def test_a_download_cut_by_the_link_is_resumed_at_the_next_look(updating, s3_server: S3Server, tmp_path, monkeypatch):
    """The new version's download is cut half-way (a TCP gate in front of S3): the update fails once (counted
    once, A serving), and the next look resumes the download with a ranged GET and swaps."""
    host, port = s3_server.server.get_host_and_port()
    gate = Gate((host, port))
    for name, value in {**s3_server.env, "AWS_ENDPOINT_URL": gate.url, "STORAGE_RETRIES": "0"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    s3_server.put(BUCKET, {"cut/model.tflite": A})
    labels = str(MODEL_FILE.parent / "labels.txt")
    server = updating(model_uri=f"s3://{BUCKET}/cut/model.tflite", model_cache_dir=str(tmp_path), labels=labels)
    assert top_label(server) == MACAW

    gate.mode, gate.cut_after = "cut", len(B) // 2
    s3_server.put(BUCKET, {"cut/model.tflite": B})
    eventually(lambda: top_label(server) == GOLDFISH, "B serves")
    gate.close()
    assert failures(server.prometheus()) == 1
    gets = [r.lower() for r in gate.requests if r.startswith(f"GET /{BUCKET}/cut/model.tflite")]
    resumed = re.search(r"range: bytes=(\d+)-", gets[-1])
    assert len(gets) == 3 and "range: bytes=" not in gets[1] and resumed and 0 < int(resumed[1]) < len(B), gets


def test_a_local_copy_follows_the_source_it_was_filled_from(updating, s3_server: S3Server, tmp_path, monkeypatch):
    """As in a pod: the initializer fills the model directory from S3 through the node's cache, and the server
    serves that directory with model_update_uri naming the object; a new object there is swapped in, the
    cache holding it (the initializer of the next pod start copies it without a download)."""
    for name, value in s3_server.env.items():
        monkeypatch.setenv(name, value)
    uri = f"s3://{BUCKET}/follow/model.tflite"
    s3_server.put(BUCKET, {"follow/model.tflite": A})
    cache = storage.ModelCache(str(tmp_path / "cache"), storage.Limits.resolve())
    storage.provide(uri, str(tmp_path / "models"), cache.root)
    labels = str(MODEL_FILE.parent / "labels.txt")
    server = updating(
        model_uri=str(tmp_path / "models"), model_update_uri=uri, model_cache_dir=cache.root, labels=labels
    )
    assert top_label(server) == MACAW

    s3_server.put(BUCKET, {"follow/model.tflite": B})
    eventually(lambda: top_label(server) == GOLDFISH, "B serves")
    cached = cache.cached(uri)
    assert cached is not None and cached.version == version_of(B) and failures(server.prometheus()) == 0


# --- parameters -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "params, words",
    [
        ({"model_poll_interval": -1.0}, "parameter model_poll_interval=-1.0: expected seconds >= 0"),
        (
            {"model_uri": "https://models.example/m.tflite", "model_poll_interval": 30.0, "model_cache_dir": ""},
            "parameter model_poll_interval=30 with a remote model_uri needs the node's model cache",
        ),
        (
            {"model_update_uri": "/mnt/elsewhere", "model_poll_interval": 30.0},
            "parameter model_update_uri='/mnt/elsewhere': expected an s3://, https:// or http:// URI",
        ),
        (
            {"model_update_uri": "s3://models/m.tflite", "model_cache_dir": "/tmp"},
            "parameter model_update_uri is set but model_poll_interval is 0",
        ),
        (
            {"model_update_uri": "s3://models/m.tflite", "model_poll_interval": 30.0, "model_cache_dir": ""},
            "parameter model_poll_interval=30 with a remote model_update_uri needs the node's model cache",
        ),
        ({"model_check_input": "nowhere.jpg"}, "parameter model_check_input='nowhere.jpg': cannot read it"),
        ({"model_check_input": "labels.txt"}, "expected an image (.jpg, .jpeg, .png, .bmp) or tensors (.npy, .npz)"),
    ],
)
def test_update_parameters_are_checked_at_start(fail, params, words):
    line = fail("TFLiteServer", **{"model_uri": str(MODEL_FILE.parent), **params})
    assert words in line


def test_a_check_input_of_the_wrong_shape_is_named_at_start(fail, tmp_path):
    import numpy as np

    np.save(tmp_path / "check.npy", np.zeros((1, 128, 128, 3), np.uint8))
    line = fail("TFLiteServer", model_uri=str(MODEL_FILE.parent), model_check_input=str(tmp_path / "check.npy"))
    assert f"model_check_input={str(tmp_path / 'check.npy')!r}: input input expects shape [1, 224, 224, 3]" in line
