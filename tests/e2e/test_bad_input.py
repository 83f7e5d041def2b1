"""Malformed requests end to end: the empty and non-JSON bodies (also in-process, for comparison) and the
gRPC cases, since it is grpc's own server that turns the raised error into the status the client sees
(tests/component/test_bad_input.py has the REST cases in-process)."""

from __future__ import annotations

import grpc
import numpy as np
import pytest
from seldon_core.proto import prediction_pb2

from edgeservers.protocols.v1.codecs import tensor_to_tf
from tests.support.paths import image_bytes


@pytest.mark.parametrize("server", ["mobilenet_in_process", "mobilenet"])
def test_empty_body_and_non_json_body_answer_400(request, server):
    server = request.getfixturevalue(server)
    for kwargs in ({"data": b""}, {"data": b"not json", "headers": {"Content-Type": "application/json"}}):
        response = server.rest(**kwargs)
        assert response.status_code == 400, response.text
        assert response.json()["status"]["info"]
    assert server.image("parrot.jpg")["jsonData"][0]["label"] == "macaw"


GRPC_CASES = {
    "undecodable image": (prediction_pb2.SeldonMessage(binData=b"\x00\x01 not an image"), "not a decodable image"),
    "empty message": (prediction_pb2.SeldonMessage(), "no payload"),
    "wrong shape tensor": ("shape", "expects shape [1, 224, 224, 3]"),
    "wrong dtype tftensor": ("dtype", "tftensor has dtype float32"),
    "strData not base64": (prediction_pb2.SeldonMessage(strData="%%%"), "not valid base64"),
}


@pytest.mark.parametrize("case", sorted(GRPC_CASES))
def test_grpc_bad_request_gets_an_error_status_with_the_message(mobilenet, case):
    message, words = GRPC_CASES[case]
    if message == "shape":
        message = prediction_pb2.SeldonMessage()
        message.data.tensor.shape.extend([2, 2])
        message.data.tensor.values.extend([1, 2, 3, 4])
    elif message == "dtype":
        message = prediction_pb2.SeldonMessage()
        message.data.tftensor.CopyFrom(tensor_to_tf(np.zeros((1, 224, 224, 3), np.float32)))
    with pytest.raises(grpc.RpcError) as error:
        mobilenet.grpc(message)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert words in error.value.details()
    ok = mobilenet.grpc(prediction_pb2.SeldonMessage(binData=image_bytes("parrot.jpg")))
    assert ok.jsonData.list_value.values[0].struct_value.fields["label"].string_value == "macaw"
