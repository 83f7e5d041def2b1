"""Small requests that ask for much more work than they weigh, in-process: a response over max_response_bytes,
shapes beyond any tensor, an image store that hangs (REST through Seldon's Flask app, OIP gRPC on a real gRPC
server in this process), and uncertain uploads a store refuses or never answers
(tests/e2e/test_amplification.py measures the others against the real server)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import grpc
import pytest
from open_inference.grpc import protocol as pb

from tests.support import amplify
from tests.support.paths import MOBILENET_V2, image_bytes
from tests.support.services import BlackHole, S3Server

OUTPUT, INFER = amplify.OUTPUT, amplify.infer_path()


@pytest.fixture(scope="module")
def store(s3_server):
    return amplify.image_store(s3_server)


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


def test_a_hanging_image_store_answers_504_within_image_store_timeout(load_server, store, monkeypatch):
    with BlackHole() as hole:
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
    assert elapsed < 1.5 + 5.0, elapsed  # the deadline, not boto's own timeouts and retries (a minute or more)


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


def test_an_upload_the_store_refuses_is_dropped_after_bounded_tries(
    store: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
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


def test_uploads_left_at_shutdown_are_counted_as_dropped(monkeypatch: pytest.MonkeyPatch) -> None:
    from edgeservers.data_loop import uncertain
    from edgeservers.data_loop.image_store import ObjectRef

    with BlackHole() as hole:
        monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{hole.port}")
        counted: list[str] = []
        uploader = uncertain.UncertainUploader(ObjectRef("retraining", ""), 8, counted.append)
        uploader.start()
        for i in range(3):
            uploader.submit(image_bytes("parrot.jpg"), {"request_id": str(i)})
        uploader.drain(0.5)
    assert counted == [uncertain.DROPPED] * 3
