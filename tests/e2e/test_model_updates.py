"""In-place model updates end to end: every serving process of a real `seldon-core-microservice` swaps (REST workers
and gRPC, through the swap), an S3 object (moto) replaced under load swaps without a failed request and memory
returns, and a model that fails its model_check_input stops the server at start. Counterpart:
component/test_model_updates.py (one process in-process: local files, refusals, a cut download, parameters)."""

from __future__ import annotations

import base64
import subprocess
import threading
import time
from collections import Counter

import requests
from google.protobuf import empty_pb2, json_format
from seldon_core.proto import prediction_pb2, prediction_pb2_grpc

from tests.support.clients import ModelServer, our_line
from tests.support.harness import tree_memory
from tests.support.paths import ROOT, image_bytes
from tests.support.services import S3Server
from tests.support.updating import (
    GOLDFISH,
    HANG_BOUND,
    MACAW,
    PARROT_PATH,
    A,
    Load,
    dead_classifier,
    eventually,
    failures,
    model_dir,
    model_info,
    model_tar,
    put_model,
    swapped_classes,
    top_label,
    version_of,
    version_of_tar,
)

B = swapped_classes("macaw", "goldfish")
POLL = 0.25  # model_poll_interval here: seconds
BUCKET = "updates"


def test_every_serving_process_swaps(start_server, tmp_path):
    """Two REST workers and a gRPC worker: each process looks at the directory and swaps on its own; v1 REST and
    gRPC (every gRPC request answered through the swap), the Open Inference Protocol, every worker's
    model_info gauge and the v1 metadata of REST and gRPC say B."""
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
    rest = requests.get(f"{server.url}/api/v1.0/metadata", timeout=10).json()
    grpc_meta = prediction_pb2_grpc.ModelStub(server.channel()).Metadata(empty_pb2.Empty(), timeout=10)
    assert rest["custom"]["model_version"] == grpc_meta.custom["model_version"] == version_of(B)  # v1 metadata


def _grpc_label(server: ModelServer) -> str:
    reply = server.grpc(prediction_pb2.SeldonMessage(binData=image_bytes("parrot.jpg")))
    return json_format.MessageToDict(reply.jsonData)[0]["label"]


KEY = "mobilenet/model.tar.gz"


def test_an_object_replaced_under_load_swaps_without_a_failed_request(start_server, s3_server: S3Server, tmp_path):
    """8 clients predict over REST (the chart's settings: one REST worker, one thread, gRPC off)
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


def test_a_model_that_fails_its_check_input_at_start_stops_the_server(tmp_path):
    directory = model_dir(tmp_path / "model", dead_classifier())
    server = ModelServer("TFLiteServer", {"GRPC_WORKERS": "0"}, model_uri=str(directory), model_check_input=PARROT_PATH)
    ended = subprocess.run(server.command(), cwd=ROOT, env=server.env, capture_output=True, text=True, timeout=120)
    assert ended.returncode != 0
    line = our_line("TFLiteServer", ended.stderr)
    assert line.endswith(f"model_check_input {PARROT_PATH}: the answer is empty: every class scores 0"), line
