"""One error, the same status through every door: each kind of refusal sent over Seldon's v1 REST and gRPC and
the Open Inference Protocol's REST and gRPC, to one real server (REST and gRPC in its one process), answered
with the HTTP status or gRPC code of protocols/errors.py's table and the protocol's own body."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

import cv2
import grpc
import numpy as np
import pytest
import requests
from open_inference.grpc import protocol as pb
from seldon_core.proto import prediction_pb2, prediction_pb2_grpc

from edgeservers.protocols.errors import GRPC_CODES
from edgeservers.protocols.v1.codecs import tensor_to_tf
from tests.support.clients import ModelServer
from tests.support.paths import MOBILENET_V2

MODEL = "mobilenet_v2_1.0_224_quant"
MAX_PIXELS = 1_000_000


@pytest.fixture(scope="module")
def server():
    env = {"GUNICORN_WORKERS": "1", "GUNICORN_THREADS": "1", "GRPC_WORKERS": "1"}
    server = ModelServer("TFLiteServer", env, model_uri=str(MOBILENET_V2), max_image_pixels=MAX_PIXELS).start()
    yield server
    server.stop()


def big_jpeg() -> bytes:
    ok, jpeg = cv2.imencode(".jpg", np.zeros((1500, 1500, 3), np.uint8))
    assert ok
    return jpeg.tobytes()


# What each kind of refusal sends: an image (bytes), or a uint8 tensor (an array).
CASES: dict[str, tuple[int, Any, str]] = {
    "an image over max_image_pixels": (413, big_jpeg(), "max_image_pixels is 1,000,000"),
    "bytes that are not an image": (400, b"not an image at all", "not a decodable image"),
    "a tensor of the wrong shape": (400, np.zeros((1, 10, 10, 3), np.uint8), "expects shape [1, 224, 224, 3]"),
    "more values than the input could use": (413, np.zeros((1, 700, 700, 3), np.uint8), "counted"),
}


def v1_rest(server: ModelServer, payload: Any) -> tuple[int, str]:
    if isinstance(payload, bytes):
        body: dict[str, Any] = {"binData": base64.b64encode(payload).decode()}
    elif payload.size > 200_000:  # as JSON numbers: the value count
        body = {"data": {"ndarray": payload.tolist()}}
    else:
        body = {"data": {"tftensor": json.loads(json.dumps(_tf_json(payload)))}}
    reply = requests.post(server.url + "/api/v1.0/predictions", json=body, timeout=60)
    status = reply.json()["status"]
    assert status["code"] == reply.status_code and status["reason"], status
    return reply.status_code, status["info"]


def _tf_json(array: np.ndarray) -> dict:
    from google.protobuf import json_format

    return json_format.MessageToDict(tensor_to_tf(array))


def v1_grpc(server: ModelServer, payload: Any) -> tuple[grpc.StatusCode, str]:
    if isinstance(payload, bytes):
        message = prediction_pb2.SeldonMessage(binData=payload)
    elif payload.size > 200_000:  # as typed values: the value count
        message = prediction_pb2.SeldonMessage()
        message.data.tensor.shape.extend(payload.shape)
        message.data.tensor.values.extend(payload.ravel().astype(float).tolist())
    else:
        message = prediction_pb2.SeldonMessage()
        message.data.tftensor.CopyFrom(tensor_to_tf(payload))
    try:
        prediction_pb2_grpc.ModelStub(server.channel()).Predict(message, timeout=60)
    except grpc.RpcError as e:
        return e.code(), e.details()
    raise AssertionError("no error")


def oip_rest(server: ModelServer, payload: Any) -> tuple[int, str]:
    tensor: dict[str, Any]
    if isinstance(payload, bytes):
        tensor = {
            "name": "input",
            "datatype": "BYTES",
            "shape": [1],
            "data": [{"b64": base64.b64encode(payload).decode()}],
        }
    else:
        tensor = {"name": "input", "datatype": "UINT8", "shape": list(payload.shape), "data": payload.ravel().tolist()}
    reply = requests.post(f"{server.url}/v2/models/{MODEL}/infer", json={"inputs": [tensor]}, timeout=60)
    assert set(reply.json()) == {"error"}, reply.text
    return reply.status_code, reply.json()["error"]


def oip_grpc(server: ModelServer, payload: Any) -> tuple[grpc.StatusCode, str]:
    request = pb.ModelInferRequest(model_name=MODEL)
    if isinstance(payload, bytes):
        request.inputs.add(name="input", datatype="BYTES", shape=[1]).contents.bytes_contents.append(payload)
    else:
        tensor = request.inputs.add(name="input", datatype="UINT8", shape=list(payload.shape))
        tensor.contents.uint_contents.extend(payload.ravel().tolist())
    infer = server.channel().unary_unary(
        "/inference.GRPCInferenceService/ModelInfer",
        request_serializer=pb.ModelInferRequest.SerializeToString,
        response_deserializer=pb.ModelInferResponse.FromString,
    )
    try:
        infer(request, timeout=60)
    except grpc.RpcError as e:
        return e.code(), e.details()
    raise AssertionError("no error")


DOORS: dict[str, Callable[[ModelServer, Any], tuple[Any, str]]] = {
    "v1 REST": v1_rest,
    "v1 gRPC": v1_grpc,
    "OIP REST": oip_rest,
    "OIP gRPC": oip_grpc,
}


@pytest.mark.parametrize("door", DOORS)
@pytest.mark.parametrize("case", CASES)
def test_each_refusal_gets_its_status_through_every_door(server, case, door):
    status, payload, words = CASES[case]
    got, message = DOORS[door](server, payload)
    expected = GRPC_CODES[status] if "gRPC" in door else status
    assert got == expected, (got, message)
    assert words in message, message
