"""Small requests that ask for much more work than they weigh (bench/amplify.py builds them): each is
refused before the work, and its cost is measured as the audit measured it: the status, the peak PSS
growth of the server's process tree, and the wait of a normal prediction sent beside it. The chart's
settings (one REST worker with one thread), gRPC on for the gRPC cases; a real S3 (moto) behind
image_store and uncertain_store."""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import grpc
import pytest
import requests
from open_inference.grpc import protocol as pb

from bench import amplify
from bench.hostile import CHART_ENV, normal_body

from conftest import MOBILENET_V2, image_bytes

GROWTH_MB = 100  # no request under max_request_bytes may cost more (docs/security.md)
WAIT_S = 5.0  # a normal prediction beside a refused request is not held: refusals take milliseconds
OUTPUT, INFER = amplify.OUTPUT, amplify.infer_path()


@pytest.fixture(scope="module")
def store(s3_server):
    s3_server.put(amplify.BUCKET, {"cam/parrot.jpg": image_bytes("parrot.jpg")})
    return s3_server


@pytest.fixture(scope="module")
def server(start_server, store):
    return start_server(
        "TFLiteServer",
        env={**CHART_ENV, "GRPC_WORKERS": "1", **store.env},
        model_uri=str(MOBILENET_V2),
        image_store=f"s3://{amplify.BUCKET}/cam/",
    )


def assert_cheap(row: dict[str, Any], status: Any) -> None:
    assert row["status"] == status, row
    assert row["pss_growth_mb"] < GROWTH_MB, row
    assert row["bystander_wait_s"] is not None and row["bystander_wait_s"] < WAIT_S, row


# --- requested outputs and the response ---------------------------------------------------------------


def test_an_output_requested_many_times_is_refused_before_the_work(server):
    rest = amplify.measured(
        server, "", lambda: amplify.post(server.http_port, INFER, amplify.repeated_outputs(10_000, 1001))
    )
    assert_cheap(rest, 400)
    grpc_row = amplify.measured(
        server, "", lambda: amplify.grpc_call(server, "ModelInfer", amplify.grpc_repeated_outputs(2_000, 1001))
    )
    assert_cheap(grpc_row, "INVALID_ARGUMENT")
    twice = requests.post(server.url + INFER, data=amplify.repeated_outputs(2, 5), timeout=30)
    assert twice.status_code == 400 and f"output {OUTPUT!r} is requested more than once" in twice.json()["error"]


def test_a_classification_beyond_the_outputs_classes_is_refused(server):
    answer = requests.post(server.url + INFER, data=amplify.repeated_outputs(1, 1002), timeout=30)
    assert answer.status_code == 400, answer.text
    assert "from 1 to its 1001 classes, got 1002" in answer.json()["error"]
    whole = requests.post(server.url + INFER, data=amplify.repeated_outputs(1, 1001), timeout=30)
    assert whole.status_code == 200 and len(whole.json()["outputs"][0]["data"]) == 1001


@contextmanager
def oip_grpc(component: Any) -> Iterator[grpc.Channel]:
    """The component's Open Inference Protocol service on a real gRPC server in this process."""
    from edgeservers.protocols.grpc_limits import ValueBudget
    from edgeservers.protocols.oip import grpc as oip_grpc
    from edgeservers.protocols.oip.model import OipModel

    oip = OipModel(component.model, lambda metrics: None)
    server = grpc.server(ThreadPoolExecutor(2), interceptors=[ValueBudget(oip.values_limit)])
    oip_grpc.registrar(oip)(server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield channel
    finally:
        channel.close()
        server.stop(None)


def oip_infer(channel: grpc.Channel, request: bytes) -> tuple[str, str]:
    call = channel.unary_unary(
        "/inference.GRPCInferenceService/ModelInfer",
        request_serializer=lambda data: data,
        response_deserializer=pb.ModelInferResponse.FromString,
    )
    try:
        call(request, timeout=30)
        return "OK", ""
    except grpc.RpcError as e:
        return e.code().name, e.details()


def test_max_response_bytes_answers_413_on_rest_and_grpc(load_server):
    """1001 uint8 scores: 1,001 bytes binary, about 4 KB as JSON; with a 1,000-byte limit both are refused
    before the response is built, the post-processed answer alone fits."""
    small = load_server("TFLiteServer", model_uri=str(MOBILENET_V2), max_response_bytes=1000)
    tensor = {"inputs": [amplify.image_input()], "outputs": [{"name": OUTPUT}]}
    for body in (tensor, {**tensor, "parameters": {"binary_data_output": True}}):
        answer = small.client.post(INFER, data=json.dumps(body), content_type="application/json")
        assert answer.status_code == 413, answer.get_data(as_text=True)
        assert "max_response_bytes=1000" in answer.get_json()["error"]
    answer = small.client.post(
        INFER,
        data=json.dumps({"inputs": [amplify.image_input()], "outputs": [{"name": "answer"}]}),
        content_type="application/json",
    )
    assert answer.status_code == 200
    request = pb.ModelInferRequest(model_name=amplify.MODEL_NAME)
    request.inputs.add(name="input", datatype="BYTES", shape=[1]).contents.bytes_contents.append(
        image_bytes("parrot.jpg")
    )
    request.outputs.add(name=OUTPUT)
    with oip_grpc(small.component) as channel:
        code, details = oip_infer(channel, request.SerializeToString())
    assert code == "RESOURCE_EXHAUSTED" and "max_response_bytes=1000" in details


# --- bucket notifications and the image store -----------------------------------------------------------


def test_a_notification_naming_too_many_objects_is_refused_before_any_fetch(server, load_server, monkeypatch):
    assert_cheap(
        amplify.measured(
            server, "", lambda: amplify.post(server.http_port, "/api/v1.0/predictions", amplify.notification(2_000))
        ),
        413,
    )
    with black_hole() as hole:  # an S3 endpoint that would hold every fetch: none may be tried
        monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{hole.port}")
        component = load_server("TFLiteServer", model_uri=str(MOBILENET_V2), image_store=f"s3://{amplify.BUCKET}/cam/")
        answer = component.rest(json.loads(amplify.notification(17)))
        assert answer.status_code == 413 and "max_event_records=16" in answer.json()["status"]["info"]
        assert hole.accepted == 0


def test_a_hanging_image_store_answers_504_within_image_store_timeout(load_server, store, monkeypatch):
    with black_hole() as hole:
        for name, value in {**store.env, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{hole.port}"}.items():
            monkeypatch.setenv(name, value)
        component = load_server(
            "TFLiteServer",
            model_uri=str(MOBILENET_V2),
            image_store=f"s3://{amplify.BUCKET}/cam/",
            image_store_timeout=1.5,
        )
        start = time.monotonic()
        answer = component.rest({"jsonData": {"image_uri": f"s3://{amplify.BUCKET}/cam/parrot.jpg"}})
        elapsed = time.monotonic() - start
    assert answer.status_code == 504, answer.text
    assert "image_store_timeout=1.5" in answer.json()["status"]["info"]
    assert elapsed < 1.5 + 1.0, elapsed  # the deadline, not the client's own timeouts and retries


class _BlackHole:
    """A port that accepts connections and never answers, counting them."""

    def __init__(self) -> None:
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        self.accepted = 0
        self.held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.accepted += 1
            self.held.append(conn)


@contextmanager
def black_hole() -> Iterator[_BlackHole]:
    hole = _BlackHole()
    try:
        yield hole
    finally:
        hole.listener.close()
        for conn in hole.held:
            conn.close()


# --- values counted before parsing -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "make", [amplify.header_bypass_numbers, amplify.header_bypass_inputs], ids=["numbers", "inputs"]
)
def test_the_binary_header_does_not_skip_the_value_count(server, make):
    body, headers = make((16 << 20) - 4096) if make is amplify.header_bypass_numbers else make(250_000)
    row = amplify.measured(server, "", lambda: amplify.post(server.http_port, INFER, body, headers))
    assert_cheap(row, 413)


@pytest.mark.parametrize("field", ["uint_contents", "bytes_contents", "fp32_contents"])
def test_typed_grpc_contents_are_counted_before_they_are_parsed(server, field):
    request = amplify.grpc_typed_contents(field, 16_000_000)
    row = amplify.measured(server, "", lambda: amplify.grpc_call(server, "ModelInfer", request))
    assert_cheap(row, "RESOURCE_EXHAUSTED")
    assert row["s"] < WAIT_S, row


def test_shapes_beyond_any_tensor_and_bytes_nested_past_the_shape_answer_400(mobilenet_in_process):
    huge = [2**32, 2**32]
    image = {"name": "input", "datatype": "BYTES", "shape": huge, "data": ["x"]}
    numbers = {"name": "input", "datatype": "UINT8", "shape": [*huge, 2**32], "data": [0]}
    deep = "[" * 1000 + '"x"' + "]" * 1000  # deeper than json.dumps would write
    bodies = {
        "image with an overflowing shape": json.dumps({"inputs": [image]}),
        "numbers with an overflowing shape": json.dumps({"inputs": [numbers]}),
        "BYTES nested 1000 deep": '{"inputs": [{"name": "input", "datatype": "BYTES", "shape": [1], "data": '
        + deep
        + "}]}",
    }
    for name, body in bodies.items():
        answer = mobilenet_in_process.client.post(INFER, data=body, content_type="application/json")
        assert answer.status_code == 400, (name, answer.get_data(as_text=True))
    request = pb.ModelInferRequest(model_name=amplify.MODEL_NAME)
    request.inputs.add(name="input", datatype="BYTES", shape=huge)
    request.raw_input_contents.append(b"\x01\x00\x00\x00x")
    with oip_grpc(mobilenet_in_process.component) as channel:
        assert oip_infer(channel, request.SerializeToString())[0] == "INVALID_ARGUMENT"


# --- uncertain uploads ------------------------------------------------------------------------------------


def test_one_request_cannot_stop_the_uncertain_uploads(start_server, store):
    """A 100 KB request_id used to become an object key the store refused, and the one upload thread retried
    it forever at the head of the queue. Now the key holds a safe id, and every upload arrives; the counts
    reach Prometheus without waiting for another request. (A queue of 64: the 41 predictions here arrive
    faster than they upload.)"""
    store.put("retraining", {})
    server = start_server(
        "TFLiteServer",
        env={**CHART_ENV, **store.env},
        model_uri=str(MOBILENET_V2),
        uncertain_store="s3://retraining/poison/",
        confidence_threshold=1.0,
        uncertain_queue_size=64,
    )
    body = json.loads(normal_body())
    poisoned = server.rest({**body, "meta": {"tags": {"request_id": "x" * 100_000}}})
    assert poisoned.status_code == 200
    for i in range(40):
        assert server.rest({**body, "meta": {"tags": {"request_id": f"frame-{i}"}}}).status_code == 200

    def images() -> list[str]:
        listed = store.client.list_objects_v2(Bucket="retraining", Prefix="poison/").get("Contents", [])
        return [o["Key"] for o in listed if o["Key"].endswith(".jpg")]

    deadline = time.monotonic() + 30
    while len(images()) < 41 and time.monotonic() < deadline:
        time.sleep(0.2)
    keys = images()
    assert len(keys) == 41, keys
    assert all(len(k) < 200 for k in keys) and sum(k.endswith("-frame-7.jpg") for k in keys) == 1

    def counted() -> float:
        lines = server.prometheus().splitlines()
        return sum(float(x.rsplit(" ", 1)[1]) for x in lines if x.startswith("edgeservers_uncertain_uploaded_total{"))

    while counted() < 41 and time.monotonic() < deadline + 5:  # the last count follows its sidecar's upload
        time.sleep(0.2)
    assert counted() == 41
    os.killpg(server.proc.pid, signal.SIGTERM)
    server.proc.wait(30)
    assert max(len(line) for line in server.stderr_after_exit().splitlines()) < 2000  # no 100 KB log lines


def test_an_upload_the_store_refuses_is_dropped_after_bounded_tries(store, monkeypatch):
    """A real 4xx (a bucket that does not exist, 404) for every try of an item: dropped after REFUSED_TRIES and
    counted; the next item is tried at once, and uploads once the bucket exists."""
    from edgeservers.data_loop import uncertain
    from edgeservers.data_loop.image_store import ObjectRef

    for name, value in store.env.items():
        monkeypatch.setenv(name, value)
    counted: list[str] = []
    uploader = uncertain.UncertainUploader(ObjectRef("later", "frames/"), 8, counted.append)
    uploader.start()
    sidecar = {"request_id": "a"}
    uploader.submit(image_bytes("parrot.jpg"), sidecar)
    deadline = time.monotonic() + 20
    while not counted and time.monotonic() < deadline:
        time.sleep(0.1)
    assert counted == [uncertain.DROPPED]
    store.put("later", {})
    uploader.submit(image_bytes("parrot.jpg"), {"request_id": "b"})
    while len(counted) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert counted == [uncertain.DROPPED, uncertain.UPLOADED]


def test_uploads_left_at_shutdown_are_counted_as_dropped(monkeypatch):
    from edgeservers.data_loop import uncertain
    from edgeservers.data_loop.image_store import ObjectRef

    with black_hole() as hole:
        monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{hole.port}")
        counted: list[str] = []
        uploader = uncertain.UncertainUploader(ObjectRef("retraining", ""), 8, counted.append)
        uploader.start()
        for i in range(3):
            uploader.submit(image_bytes("parrot.jpg"), {"request_id": str(i)})
        uploader.drain(0.5)
    assert counted == [uncertain.DROPPED] * 3
