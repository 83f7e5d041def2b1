"""Every malformed request gets a 400 naming what was wrong and what was expected, and the server goes on
answering: REST in-process (Seldon's own Flask app: its parsing and error handlers, our codecs);
tests/e2e/test_bad_input.py has the gRPC cases and the empty and non-JSON bodies end to end."""

from __future__ import annotations

import numpy as np
import pytest

from edgeservers.protocols.v1.codecs import tensor_to_tf
from tests.support.paths import image_bytes
from tests.support.payloads import b64

# (request body, words the error message must contain)
REST_CASES = {
    "undecodable image": (
        {"binData": b64(b"this is not a jpeg at all")},
        ["not a decodable image", "JPEG, PNG or BMP"],
    ),
    "truncated jpeg": ("truncated", ["not a decodable image"]),
    "empty binData": ({"binData": ""}, ["empty", "JPEG"]),
    "binData not base64": ({"binData": "%%% not base64 %%%"}, ["not valid base64"]),
    "binData not a string": ({"binData": 12}, ["base64 string"]),
    "empty object": ({}, ["no payload", "binData"]),
    "unknown field": ({"image": "x"}, ["no payload", "keys: image", "data.ndarray"]),
    "data without a tensor": ({"data": {"names": ["a"]}}, ["none of ndarray, tensor, tftensor"]),
    "wrong shape": ({"data": {"ndarray": [[1, 2, 3]]}}, ["expects shape [1, 224, 224, 3]", "has shape [1, 3]"]),
    "ragged ndarray": ({"data": {"ndarray": [[1, 2], [3]]}}, ["rectangular array of numbers"]),
    "strings in ndarray": ({"data": {"ndarray": [["a", "b"]]}}, ["rectangular array of numbers"]),
    "out of range for uint8": ("range", ["values from 0 to 255", "-5"]),
    "fractions for uint8": ("fraction", ["whole numbers", "fractions"]),
    "tensor values do not fit shape": (
        {"data": {"tensor": {"shape": [1, 224, 224, 3], "values": [1, 2]}}},
        ["has 2 values", "needs 150528"],
    ),
    "tensor without shape": ({"data": {"tensor": {"values": [1, 2]}}}, ['{"shape": [...], "values": [...]}']),
    "tftensor wrong dtype": ("tftensor", ["expects shape [1, 224, 224, 3] of uint8", "tftensor has dtype float32"]),
    "json data wrong input name": (
        {"jsonData": {"image": [[1]]}},
        ["one entry per input name (input)", "unknown: image"],
    ),
    "json data not an object": ({"jsonData": [1, 2]}, ["jsonData must be an object"]),
}


def _body(case):
    body, words = REST_CASES[case]
    if body == "truncated":
        body = {"binData": b64(image_bytes("parrot.jpg")[:200])}
    elif body == "range":
        body = {"data": {"ndarray": np.full((1, 224, 224, 3), -5).tolist()}}
    elif body == "fraction":
        body = {"data": {"ndarray": np.full((1, 224, 224, 3), 0.5).tolist()}}
    elif body == "tftensor":
        from google.protobuf import json_format

        body = {"data": {"tftensor": json_format.MessageToDict(tensor_to_tf(np.zeros((1, 224, 224, 3), np.float32)))}}
    return body, words


@pytest.mark.parametrize("case", sorted(REST_CASES))
def test_rest_bad_request_answers_400_with_a_clear_message_and_the_server_stays_up(mobilenet_in_process, case):
    body, words = _body(case)
    response = mobilenet_in_process.rest(body)
    assert response.status_code == 400, response.text
    info = response.json()["status"]["info"]
    for word in words:
        assert word in info, info
    assert mobilenet_in_process.image("parrot.jpg")["jsonData"][0]["label"] == "macaw"


def test_multipart_form_with_a_non_image_file_answers_400(mobilenet_in_process):
    response = mobilenet_in_process.rest(files={"binData": ("notes.txt", b"plain text, no image")})
    assert response.status_code == 400
    assert "not a decodable image" in response.json()["status"]["info"]


def test_empty_json_data_answers_400_naming_what_is_expected(face_mask_in_process):
    response = face_mask_in_process.rest({"jsonData": {}})
    assert response.status_code == 400
    assert "one entry per input name" in response.json()["status"]["info"]


@pytest.mark.parametrize(
    "method, path, code, words",
    [
        ("get", "/nope", 404, ["GET /nope", "Not Found", "POST /api/v1.0/predictions"]),
        ("put", "/api/v1.0/predictions", 405, ["PUT /api/v1.0/predictions", "allowed here", "POST"]),
    ],
)
def test_an_unknown_endpoint_or_method_answers_its_own_4xx(mobilenet_in_process, method, path, code, words):
    """Seldon's app answered a routing miss 500 (its handler of every Exception)."""
    reply = mobilenet_in_process.client.open(path, method=method.upper())
    assert reply.status_code == code, reply.get_data(as_text=True)
    info = reply.get_json()["status"]["info"]
    assert all(w in info for w in words), info
    assert mobilenet_in_process.image("parrot.jpg")["jsonData"][0]["label"] == "macaw"
