"""In-place model updates (model_poll_interval, edgeservers/core/updates.py) with real models, a real S3 server
(moto), real servers under load: a new version serves without a restart or a failed request, a version the
server cannot serve is refused once and the old one keeps serving, and memory returns once the old pool is gone.

The models: models/mobilenet_v2_quant (A) and the same network with the classes macaw and goldfish exchanged in its
last layer (B, tests/model_variants.py): the same tensors, other answers: A calls parrot.jpg a macaw, B a goldfish.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import shutil
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from google.protobuf import json_format
from seldon_core.proto import prediction_pb2

from conftest import IMAGES, MOBILENET_V1, ROOT, ModelServer, image_bytes, our_line
from harness import tree_memory
from services import Gate, S3Server, make_tar
from updating import HANG_BOUND, LABELS, MODEL_FILE, Load, dead_classifier, eventually, swapped_classes

A = MODEL_FILE.read_bytes()
B = swapped_classes("macaw", "goldfish")
MACAW, GOLDFISH = "macaw", LABELS[2]  # parrot.jpg's answer from A, from B
POLL = 0.25  # model_poll_interval here: seconds
PARROT = str(IMAGES / "parrot.jpg")
BUCKET = "updates"


def version_of(model: bytes) -> str:
    return hashlib.sha256(model).hexdigest()[:12]


def top_label(server: Any) -> str:
    return server.image("parrot.jpg")["jsonData"][0]["label"]


def put_model(directory: Path, model: bytes, name: str = "model.tflite") -> None:
    """Replace the model file as docs/kubernetes.md says to: written beside it, renamed over it."""
    staged = directory / f".{name}.new"
    staged.write_bytes(model)
    os.replace(staged, directory / name)


def model_dir(root: Path, model: bytes = A) -> Path:
    root.mkdir()
    shutil.copy(MODEL_FILE.parent / "labels.txt", root / "labels.txt")
    put_model(root, model)
    return root


def failures(prometheus: str) -> float:
    """edgeservers_model_update_failures_total, summed over the workers."""
    lines = [line for line in prometheus.splitlines() if line.startswith("edgeservers_model_update_failures_total{")]
    return sum(float(line.split()[-1]) for line in lines)


def model_info(prometheus: str) -> dict[tuple[str, str], float]:
    """{(worker_id, version): value} of edgeservers_model_info."""
    found = {}
    for line in prometheus.splitlines():
        if line.startswith("edgeservers_model_info{"):
            worker = re.search(r'worker_id="(\d+)"', line)
            version = re.search(r'[{,]version="(\w*)"', line)
            assert worker and version, line
            found[(worker.group(1), version.group(1))] = float(line.split()[-1])
    return found


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
    server = updating(model_uri=str(directory), model_check_input=PARROT)
    caplog.set_level("WARNING", logger="edgeservers.core.updates")

    put_model(directory, next(MOBILENET_V1.glob("*.tflite")).read_bytes())
    eventually(lambda: failures(server.prometheus()) == 1, "the other signature refused")
    (line,) = [r.getMessage() for r in caplog.records]
    assert line.startswith(f"model update refused, still serving version {version_of(A)}: version ")
    assert "input uint8 [1, 224, 224, 3]" in line and "input uint8 [1, 128, 128, 3]" in line
    assert "restart the server to serve this one" in line

    put_model(directory, dead_classifier())
    eventually(lambda: failures(server.prometheus()) == 2, "the dead classifier refused")
    assert f"model_check_input {PARROT}: the answer is empty" in caplog.records[-1].getMessage()
    time.sleep(4 * POLL)  # looks go on: the refused file is not tried again
    assert failures(server.prometheus()) == 2 and len(caplog.records) == 2
    assert top_label(server) == MACAW

    put_model(directory, B)
    eventually(lambda: top_label(server) == GOLDFISH, "B serves")
    assert failures(server.prometheus()) == 2


# --- every serving process ---------------------------------------------------------------------------------


def test_every_serving_process_swaps(start_server, tmp_path):
    """Two REST workers and a gRPC worker: each process looks at the directory and swaps on its own; v1 REST and
    gRPC (every gRPC request answered through the swap), the Open Inference Protocol and every worker's
    model_info gauge say B."""
    directory = model_dir(tmp_path / "model")
    server = start_server(
        "TFLiteServer",
        env={"GUNICORN_WORKERS": "2", "GRPC_WORKERS": "1"},
        model_uri=str(directory),
        model_poll_interval=POLL,
        metrics_interval=0.0,  # every answer hands its metrics over: whatever the swap leaves there travels too
    )
    grpc_labels: list[str] = []
    stop = threading.Event()

    def grpc_client() -> None:
        while not stop.is_set():
            grpc_labels.append(_grpc_label(server))  # an error ends the thread, and the check below fails

    client = threading.Thread(target=grpc_client, daemon=True)
    client.start()
    eventually(lambda: grpc_labels, "a gRPC answer")
    put_model(directory, B)
    eventually(lambda: grpc_labels[-1] == GOLDFISH or not client.is_alive(), "B serves gRPC")
    time.sleep(4 * POLL)
    stop.set()
    client.join(HANG_BOUND)
    assert set(grpc_labels) == {MACAW, GOLDFISH} and grpc_labels[-1] == GOLDFISH, Counter(grpc_labels)
    eventually(lambda: all(top_label(server) == GOLDFISH for _ in range(8)), "B serves every REST worker")

    def serving() -> dict[str, str]:
        """The version each process reports serving."""
        return {worker: version for (worker, version), value in model_info(server.prometheus()).items() if value}

    eventually(lambda: len(now := serving()) == 3 and set(now.values()) == {version_of(B)}, "3 processes report B")
    image = {"b64": base64.b64encode(image_bytes("parrot.jpg")).decode()}
    oip = requests.post(
        f"{server.url}/v2/models/model/infer",
        json={"inputs": [{"name": "input", "datatype": "BYTES", "shape": [1], "data": [image]}]},
        timeout=10,
    ).json()
    assert oip["model_version"] == version_of(B)  # the version that answered


def _grpc_label(server: ModelServer) -> str:
    reply = server.grpc(prediction_pb2.SeldonMessage(binData=image_bytes("parrot.jpg")))
    return json_format.MessageToDict(reply.jsonData)[0]["label"]


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


# --- test (d): an object in S3 replaced under load ------------------------------------------------------------


KEY = "mobilenet/model.tar.gz"


def model_tar(model: bytes) -> bytes:
    """The model and its labels as one .tar.gz, as the chart's examples ship a model."""
    return make_tar(
        [("mobilenet_v2.tflite", model), ("labels.txt", (MODEL_FILE.parent / "labels.txt").read_bytes())], "w:gz"
    )


def test_an_object_replaced_under_load_swaps_without_a_failed_request(start_server, s3_server: S3Server, tmp_path):
    """Issue 27 (d): 8 clients predict over REST (the chart's settings: one REST worker, one thread, gRPC off)
    while the S3 object is replaced by B, by a corrupt model, by A again and by B again: no answer but 200, each
    new version answers within the poll interval and its load, the corrupt one is refused (counted once, B still
    serving), and after three swaps the server's memory is back near where it was."""
    s3_server.put(BUCKET, {KEY: model_tar(A)})
    server = start_server(
        "TFLiteServer",
        env={**s3_server.env, "GUNICORN_WORKERS": "1", "GUNICORN_THREADS": "1", "GRPC_WORKERS": "0"},
        model_uri=f"s3://{BUCKET}/{KEY}",
        model_cache_dir=str(tmp_path / "cache"),
        model_poll_interval=POLL,
    )
    half = A[: len(A) // 2]  # an upload cut half-way
    with Load(server.url + "/api/v1.0/predictions") as load:
        load.first(MACAW, 0.0)
        time.sleep(1.0)  # every client has been answered a few times: the steady state
        before = tree_memory(server.proc.pid)["pss_mb"]

        changed = []
        for model, label in ((B, GOLDFISH), (half, None), (A, MACAW), (B, GOLDFISH)):
            put = time.monotonic()
            s3_server.put(BUCKET, {KEY: model_tar(model)})
            if label is None:  # refused: counted once, B keeps serving
                eventually(lambda: failures(server.prometheus()) == 1, "the corrupt model refused")
                time.sleep(4 * POLL)
                assert set(said := said_since(load, put)) == {GOLDFISH}, said
                continue
            answered = load.first(label, put)
            changed.append(answered - put)
            time.sleep(2 * POLL)
            said = said_since(load, answered)
            assert set(said) == {label}, said  # no request started after the new answer got the old version
        after = tree_memory(server.proc.pid)["pss_mb"]  # the old pools released: their requests have ended

    statuses = Counter(status for _, _, status, _ in load.answers)
    assert set(statuses) == {200}, [a for a in load.answers if a[2] != 200][:5]
    assert failures(server.prometheus()) == 1
    assert after - before < 30, f"PSS {before} MB before three swaps, {after} MB after"
    custom = server.get("/api/v1.0/metadata").json()["custom"]
    assert custom["model_version"] == version_of_tar(B) and custom["model_source"] == "download"
    print(
        f"\n{len(load.answers)} answers, all 200; new answers {[round(c, 2) for c in changed]} s after each put; "
        f"PSS {before} -> {after} MB"
    )


def said_since(load: Load, moment: float) -> Counter:
    """What the requests started between `moment` and now were answered, once all of them have been."""
    now = time.monotonic()
    eventually(lambda: load.settled(now), "every request in flight answered")
    return load.said(moment, now)


def version_of_tar(model: bytes) -> str:
    """The version of a model tar's two files: the model cache's listing digest."""
    listing = "".join(
        f"{hashlib.sha256(data).hexdigest()}  {name}\n"
        for name, data in sorted(
            {"labels.txt": (MODEL_FILE.parent / "labels.txt").read_bytes(), "mobilenet_v2.tflite": model}.items()
        )
    )
    return hashlib.sha256(listing.encode()).hexdigest()[:12]


# --- parameters -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "params, words",
    [
        ({"model_poll_interval": -1.0}, "parameter model_poll_interval=-1.0: expected seconds >= 0"),
        (
            {"model_uri": "https://models.example/m.tflite", "model_poll_interval": 30.0, "model_cache_dir": ""},
            "parameter model_poll_interval=30 with a remote model_uri needs the node's model cache",
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


def test_a_model_that_fails_its_check_input_at_start_stops_the_server(tmp_path):
    directory = model_dir(tmp_path / "model", dead_classifier())
    server = ModelServer("TFLiteServer", {"GRPC_WORKERS": "0"}, model_uri=str(directory), model_check_input=PARROT)
    ended = subprocess.run(server.command(), cwd=ROOT, env=server.env, capture_output=True, text=True, timeout=120)
    assert ended.returncode != 0
    line = our_line("TFLiteServer", ended.stderr)
    assert line.endswith(f"model_check_input {PARROT}: the answer is empty: every class scores 0"), line
