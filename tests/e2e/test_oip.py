"""The Open Inference Protocol (V2), REST and gRPC, with the real Triton client against the real microservice.

tritonclient runs in its own venv (tests/support/triton.py and mk/oip.mk); each test writes a plan of
calls, hands it to the module's client process, and checks the answers against the plain LiteRT
interpreter (bit-exact for uint8 tensors), the v1 protocol on the same server, or the expected error.
"""

from __future__ import annotations

import base64
import json
import struct
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import requests
from seldon_core.proto import prediction_pb2

from edgeservers.protocols.v1.codecs import tensor_from_tf, tensor_to_tf
from tests.support.ground_truth import plain_image_tensor, plain_outputs
from tests.support.paths import FACE_MASK, IMAGES, MOBILENET_V2, image_bytes, labels
from tests.support.triton import TritonClient, call, ok, output

MOBILENET_NAME = "mobilenet_v2_1.0_224_quant"
MOBILENET_OUTPUT = "MobilenetV2/Predictions/Softmax"
FACE_MASK_NAME = "face_mask_detection"


@pytest.fixture(scope="module")
def triton(tmp_path_factory) -> Iterator[TritonClient]:
    client = TritonClient(tmp_path_factory.mktemp("triton"))
    yield client
    client.close()


@pytest.fixture(scope="module")
def openvino(start_server):
    """OpenVINOServer on the same .tflite, under a chosen OIP name and version."""
    return start_server("OpenVINOServer", model_uri=str(MOBILENET_V2), model_name="classifier", model_version="2")


def random_uint8(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (1, 224, 224, 3), dtype=np.uint8)


# --- health and metadata -----------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_live_ready_and_metadata(mobilenet, triton, protocol):
    results = triton.run(
        [
            call(mobilenet, protocol, "live"),
            call(mobilenet, protocol, "ready"),
            call(mobilenet, protocol, "model_ready", MOBILENET_NAME),
            call(mobilenet, protocol, "server_metadata"),
            call(mobilenet, protocol, "metadata", MOBILENET_NAME),
        ]
    )
    live, ready, model_ready, server, meta = (ok(r[0]) for r in results)
    assert live is True and ready is True and model_ready is True
    assert server["name"] == "edgeservers"
    assert set(server["extensions"]) >= {"binary_tensor_data", "classification"}
    assert meta["name"] == MOBILENET_NAME and meta["platform"] == "tflite"
    shapes = {t["name"]: (t["datatype"], [int(d) for d in t["shape"]]) for t in meta["inputs"] + meta["outputs"]}
    assert shapes == {
        "input": ("UINT8", [1, 224, 224, 3]),
        MOBILENET_OUTPUT: ("UINT8", [1, 1001]),
        "answer": ("BYTES", [1]),
    }


def test_metadata_over_plain_rest_with_curl_paths(mobilenet):
    assert requests.get(mobilenet.url + "/v2/health/live", timeout=10).json() == {"live": True}
    assert requests.get(mobilenet.url + "/v2/health/ready", timeout=10).status_code == 200
    assert requests.get(mobilenet.url + f"/v2/models/{MOBILENET_NAME}/ready", timeout=10).status_code == 200
    unknown = requests.get(mobilenet.url + "/v2/models/resnet", timeout=10)
    assert unknown.status_code == 404 and "resnet" in unknown.json()["error"]
    for path in ("/v2/models/resnet/infer/now", "/v2/repository/index"):
        assert requests.post(mobilenet.url + path, json={}, timeout=10).status_code == 404
    assert requests.get(mobilenet.url + f"/v2/models/{MOBILENET_NAME}/infer", timeout=10).status_code == 404


def test_model_name_and_version_parameters(openvino, triton):
    results = triton.run(
        [
            call(openvino, "http", "metadata", "classifier"),
            call(openvino, "grpc", "metadata", "classifier", version="2"),
            call(openvino, "http", "model_ready", "classifier", version="2"),
            call(openvino, "http", "metadata", "classifier", version="3"),
            call(openvino, "grpc", "metadata", "classifier", version="3"),
            call(openvino, "grpc", "metadata", MOBILENET_NAME),
        ]
    )
    http_meta, grpc_meta, ready = (ok(r[0]) for r in results[:3])
    for meta in (http_meta, grpc_meta):
        assert meta["name"] == "classifier" and meta["versions"] == ["2"] and meta["platform"] == "openvino"
    assert ready is True
    wrong_version_http, wrong_version_grpc, wrong_name = (r[0] for r in results[3:])
    assert wrong_version_http["status"] == "404" and "version '3'" in wrong_version_http["message"]
    assert wrong_version_grpc["status"] == "StatusCode.NOT_FOUND"
    assert wrong_name["status"] == "StatusCode.NOT_FOUND" and MOBILENET_NAME in wrong_name["message"]


# --- tensors -------------------------------------------------------------------------------------------


def test_tensors_json_binary_and_grpc_raw_are_bit_exact(mobilenet, triton):
    tensor = random_uint8(1)
    expected = plain_outputs(MOBILENET_V2, tensor)[MOBILENET_OUTPUT]
    inputs = [{"name": "input", "datatype": "UINT8", "npy": triton.npy(tensor)}]
    results = triton.run(
        [
            call(mobilenet, "http", "infer", MOBILENET_NAME, inputs=inputs, binary=True),  # binary in, binary out
            call(
                mobilenet,
                "http",
                "infer",
                MOBILENET_NAME,
                inputs=inputs,
                binary=False,  # JSON in, JSON out
                outputs=[{"name": MOBILENET_OUTPUT, "binary": False}],
            ),
            call(mobilenet, "grpc", "infer", MOBILENET_NAME, inputs=inputs),  # raw_input_contents
        ]
    )
    for result in results:
        value = ok(result[0])
        assert list(value["outputs"]) == [MOBILENET_OUTPUT]  # tensors in: raw outputs, no answer unless asked
        got = output(value, MOBILENET_OUTPUT)
        assert got.dtype == np.uint8 and got.shape == (1, 1001)
        np.testing.assert_array_equal(got, expected)


def test_float_model_several_outputs_and_output_selection(face_mask, triton):
    tensor = plain_image_tensor(FACE_MASK, "face_mask_demo.jpg", scale=1 / 255)
    expected = plain_outputs(FACE_MASK, tensor)
    inputs = [{"name": "data_1", "datatype": "FP32", "npy": triton.npy(tensor)}]
    one = sorted(expected)[0]
    results = triton.run(
        [
            call(face_mask, "http", "infer", FACE_MASK_NAME, inputs=inputs),
            call(face_mask, "grpc", "infer", FACE_MASK_NAME, inputs=inputs),
            call(face_mask, "http", "infer", FACE_MASK_NAME, inputs=inputs, outputs=[{"name": one}]),
            call(face_mask, "grpc", "infer", FACE_MASK_NAME, inputs=inputs, outputs=[{"name": one}]),
        ]
    )
    for result in results[:2]:
        value = ok(result[0])
        # postprocess=detection is set explicitly, so tensors get the answer too (as in v1)
        assert set(value["outputs"]) == set(expected) | {"answer"}
        for name, want in expected.items():
            np.testing.assert_allclose(output(value, name), want, rtol=1e-5, atol=1e-6)
    for result in results[2:]:
        value = ok(result[0])
        assert list(value["outputs"]) == [one]


def test_tensor_input_matches_the_v1_tftensor_answer_on_openvino(openvino, triton):
    """Same runtime, same pool: OIP over REST and gRPC answers what v1 answers (bit-exact)."""
    tensor = plain_image_tensor(MOBILENET_V2, "cat.bmp")
    message = prediction_pb2.SeldonMessage()
    message.data.tftensor.CopyFrom(tensor_to_tf(tensor))
    expected = tensor_from_tf(openvino.grpc(message).data.tftensor)
    inputs = [{"name": "input", "datatype": "UINT8", "npy": triton.npy(tensor)}]
    for result in triton.run(
        [
            call(openvino, "http", "infer", "classifier", version="2", inputs=inputs),
            call(openvino, "grpc", "infer", "classifier", inputs=inputs),
        ]
    ):
        np.testing.assert_array_equal(output(ok(result[0]), MOBILENET_OUTPUT), expected)


# --- images as BYTES, classification extension, answers -------------------------------------------------


@pytest.mark.parametrize("image", ["parrot.jpg", "cat.bmp", "bird.bmp"])
def test_image_as_bytes_with_class_count_gives_the_interpreters_top_label(mobilenet, openvino, triton, image):
    expected = plain_outputs(MOBILENET_V2, plain_image_tensor(MOBILENET_V2, image))[MOBILENET_OUTPUT].reshape(-1)
    top = int(expected.argmax())
    names = labels(MOBILENET_V2)
    inputs = [{"name": "input", "datatype": "BYTES", "files": [str(IMAGES / image)]}]
    outputs = [{"name": MOBILENET_OUTPUT, "class_count": 3}]
    results = triton.run(
        [
            call(mobilenet, "http", "infer", MOBILENET_NAME, inputs=inputs, outputs=outputs),
            call(mobilenet, "grpc", "infer", MOBILENET_NAME, inputs=inputs, outputs=outputs),
            call(openvino, "http", "infer", "classifier", inputs=inputs, outputs=outputs),
            call(openvino, "grpc", "infer", "classifier", inputs=inputs, outputs=outputs),
        ]
    )
    for result in results:
        value = ok(result[0])
        entry = value["outputs"][MOBILENET_OUTPUT]
        assert entry["datatype"] == "BYTES" and entry["shape"] == [1, 3]
        score, index, label = entry["bytes"][0].split(":", 2)
        assert int(index) == top and label == names[top]
        assert 0.0 <= float(score) <= 1.0


def test_image_default_outputs_include_the_post_processed_answer(mobilenet, face_mask, triton):
    parrot = [{"name": "input", "datatype": "BYTES", "files": [str(IMAGES / "parrot.jpg")]}]
    faces = [{"name": "data_1", "datatype": "BYTES", "files": [str(IMAGES / "face_mask_demo.jpg")]}]
    results = triton.run(
        [
            call(mobilenet, "http", "infer", MOBILENET_NAME, inputs=parrot),
            call(face_mask, "grpc", "infer", FACE_MASK_NAME, inputs=faces, outputs=[{"name": "answer"}]),
        ]
    )
    classified = ok(results[0][0])
    assert set(classified["outputs"]) == {MOBILENET_OUTPUT, "answer"}
    top = json.loads(output(classified, "answer")[0])
    assert top[0]["label"] == "macaw" and top == mobilenet.image("parrot.jpg")["jsonData"]
    detected = ok(results[1][0])
    assert list(detected["outputs"]) == ["answer"]
    assert json.loads(output(detected, "answer")[0]) == face_mask.image("face_mask_demo.jpg")["jsonData"]


def test_binary_extension_by_hand_with_curl_style_request(mobilenet):
    """The wire format docs/protocols.md documents: header length, JSON header, 4-byte length + JPEG."""
    jpeg = image_bytes("parrot.jpg")
    header = json.dumps(
        {
            "inputs": [
                {"name": "input", "datatype": "BYTES", "shape": [1], "parameters": {"binary_data_size": len(jpeg) + 4}}
            ],
            "outputs": [{"name": MOBILENET_OUTPUT, "parameters": {"classification": 1, "binary_data": True}}],
        }
    ).encode()
    response = requests.post(
        mobilenet.url + f"/v2/models/{MOBILENET_NAME}/infer",
        data=header + struct.pack("<I", len(jpeg)) + jpeg,
        headers={"Inference-Header-Content-Length": str(len(header)), "Content-Type": "application/octet-stream"},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    size = int(response.headers["Inference-Header-Content-Length"])
    doc = json.loads(response.content[:size])
    (out,) = doc["outputs"]
    raw = response.content[size:]
    assert out["parameters"]["binary_data_size"] == len(raw)
    (length,) = struct.unpack_from("<I", raw)
    assert raw[4 : 4 + length].decode().endswith(":89:macaw")
    # JSON only, with a base64 image ({"b64": ...}) and JSON outputs
    response = requests.post(
        mobilenet.url + f"/v2/models/{MOBILENET_NAME}/infer",
        json={
            "inputs": [
                {"name": "input", "datatype": "BYTES", "shape": [1], "data": [{"b64": base64.b64encode(jpeg).decode()}]}
            ],
            "outputs": [{"name": MOBILENET_OUTPUT, "parameters": {"classification": 1}}],
        },
        timeout=60,
    )
    assert response.json()["outputs"][0]["data"][0].endswith(":89:macaw")


# --- bad requests --------------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_bad_inputs_answer_400_or_404_with_a_message_and_the_server_stays_up(mobilenet, triton, protocol):
    good = random_uint8(2)
    bad, not_found = ("400", "404") if protocol == "http" else ("StatusCode.INVALID_ARGUMENT", "StatusCode.NOT_FOUND")
    cases = [
        (
            "wrong shape",
            MOBILENET_NAME,
            [{"name": "input", "datatype": "UINT8", "npy": triton.npy(good[:, :100])}],
            None,
            bad,
            "expects shape [1, 224, 224, 3]",
        ),
        (
            "wrong datatype",
            MOBILENET_NAME,
            [{"name": "input", "datatype": "FP32", "npy": triton.npy(good.astype(np.float32))}],
            None,
            bad,
            "expects datatype UINT8",
        ),
        (
            "unknown input",
            MOBILENET_NAME,
            [{"name": "pixels", "datatype": "UINT8", "npy": triton.npy(good)}],
            None,
            bad,
            "unknown input 'pixels'",
        ),
        (
            "unknown model",
            "resnet50",
            [{"name": "input", "datatype": "UINT8", "npy": triton.npy(good)}],
            None,
            not_found,
            "unknown model 'resnet50'",
        ),
        (
            "undecodable image",
            MOBILENET_NAME,
            [{"name": "input", "datatype": "BYTES", "files": [triton.file(b"not an image at all")]}],
            None,
            bad,
            "not a decodable image",
        ),
        (
            "two images",
            MOBILENET_NAME,
            [{"name": "input", "datatype": "BYTES", "files": [str(IMAGES / "cat.bmp")] * 2}],
            None,
            bad,
            "one encoded image per request",
        ),
        (
            "unknown output",
            MOBILENET_NAME,
            [{"name": "input", "datatype": "UINT8", "npy": triton.npy(good)}],
            [{"name": "logits"}],
            bad,
            "unknown output 'logits'",
        ),
    ]
    results = triton.run(
        [
            call(mobilenet, protocol, "infer", model, inputs=inputs, outputs=outputs)
            for _, model, inputs, outputs, _, _ in cases
        ]
    )
    for (what, *_, status, message), result in zip(cases, results, strict=True):
        assert not result[0]["ok"], what
        assert result[0]["status"] == status, (what, result)
        assert message in result[0]["message"], (what, result)
    assert mobilenet.alive()
    value = ok(
        triton.one(
            call(
                mobilenet,
                protocol,
                "infer",
                MOBILENET_NAME,
                inputs=[{"name": "input", "datatype": "UINT8", "npy": triton.npy(good)}],
            )
        )
    )
    np.testing.assert_array_equal(output(value, MOBILENET_OUTPUT), plain_outputs(MOBILENET_V2, good)[MOBILENET_OUTPUT])


def _post(server, body: bytes, header_length: str | None) -> requests.Response:
    headers = {"Content-Type": "application/octet-stream"}
    if header_length is not None:
        headers["Inference-Header-Content-Length"] = header_length
    return requests.post(server.url + f"/v2/models/{MOBILENET_NAME}/infer", data=body, headers=headers, timeout=60)


def test_malformed_binary_requests_answer_400(mobilenet):
    tensor = random_uint8(3).tobytes()
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "input",
                    "datatype": "UINT8",
                    "shape": [1, 224, 224, 3],
                    "parameters": {"binary_data_size": len(tensor)},
                }
            ]
        }
    ).encode()
    short = json.dumps(
        {
            "inputs": [
                {
                    "name": "input",
                    "datatype": "UINT8",
                    "shape": [1, 224, 224, 3],
                    "parameters": {"binary_data_size": 100},
                }
            ]
        }
    ).encode()
    cases = [
        ("header length not a number", header + tensor, "abc", "is not a byte count"),
        ("header length beyond the body", header + tensor, str(len(header) + len(tensor) + 1), "is not a byte count"),
        ("header length cuts the JSON", header + tensor, str(len(header) - 5), "must be a JSON inference request"),
        ("binary data missing", header, str(len(header)), "only 0 bytes of binary data remain"),
        ("binary data too short for the shape", short + tensor[:100], str(len(short)), "needs 150528"),
        ("extra bytes after the tensors", header + tensor + b"xx", str(len(header)), "2 bytes of binary data follow"),
        ("binary data without the header", header + tensor, None, "must be a JSON inference request"),
        ("not JSON", b"\x00\x01garbage", None, "must be a JSON inference request"),
        ("no inputs", b'{"inputs": []}', None, '"inputs"'),
        (
            "unknown datatype",
            b'{"inputs": [{"name": "input", "datatype": "FLOAT", "shape": [1], "data": [1]}]}',
            None,
            "not an OIP datatype",
        ),
        (
            "data count",
            b'{"inputs": [{"name": "input", "datatype": "UINT8", "shape": [2], "data": [1]}]}',
            None,
            "1 values but shape [2] needs 2",
        ),
        (
            "uint8 out of range",
            b'{"inputs": [{"name": "input", "datatype": "UINT8", "shape": [1], "data": [300]}]}',
            None,
            "values from 0 to 255",
        ),
    ]
    for what, body, length, message in cases:
        response = _post(mobilenet, body, length)
        assert response.status_code == 400, (what, response.status_code, response.text)
        assert message in response.json()["error"], (what, response.json())
    assert _post(mobilenet, header + tensor, str(len(header))).status_code == 200


# --- concurrency and metrics -------------------------------------------------------------------------------


def test_eight_clients_mixing_v1_and_oip_get_the_sequential_answers(mobilenet: Any, triton: TritonClient) -> None:
    tensors = [random_uint8(10 + i) for i in range(4)]
    expected = [plain_outputs(MOBILENET_V2, t)[MOBILENET_OUTPUT] for t in tensors]
    image_answer = mobilenet.image("cat.bmp")["jsonData"]
    rounds = 6
    calls = [
        call(
            mobilenet,
            protocol,
            "infer",
            MOBILENET_NAME,
            repeat=rounds,
            inputs=[{"name": "input", "datatype": "UINT8", "npy": triton.npy(tensors[i])}],
        )
        for i, protocol in enumerate(["http", "grpc", "http", "grpc"])
    ]
    v1_results: list[list[Any]] = [[] for _ in range(4)]

    def v1_client(i: int) -> None:
        for _ in range(rounds):
            if i % 2:
                v1_results[i].append(mobilenet.image("cat.bmp")["jsonData"])
            else:
                message = prediction_pb2.SeldonMessage()
                message.data.tftensor.CopyFrom(tensor_to_tf(tensors[i]))
                v1_results[i].append(tensor_from_tf(mobilenet.grpc(message).data.tftensor))

    threads = [threading.Thread(target=v1_client, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    oip_results = triton.run(calls, parallel=True)
    for t in threads:
        t.join()
    for i, results in enumerate(oip_results):
        assert len(results) == rounds
        for result in results:
            np.testing.assert_array_equal(output(ok(result), MOBILENET_OUTPUT), expected[i])
    for i, answers in enumerate(v1_results):
        assert len(answers) == rounds
        for got in answers:
            if i % 2:
                assert got == image_answer
            else:
                np.testing.assert_array_equal(got, expected[i])


def _prometheus_count(server, name: str) -> float:
    text = requests.get(f"http://127.0.0.1:{server.metrics_port}/prometheus", timeout=10).text
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + "{"))


def test_oip_requests_reach_seldons_metrics(start_server, triton):
    server = start_server("TFLiteServer", model_uri=str(MOBILENET_V2), metrics_interval=0)
    inputs = [{"name": "input", "datatype": "UINT8", "npy": triton.npy(random_uint8(4))}]
    for result in triton.run(
        [
            call(server, "http", "infer", MOBILENET_NAME, inputs=inputs, repeat=3),
            call(server, "grpc", "infer", MOBILENET_NAME, inputs=inputs, repeat=2),
        ]
    ):
        for r in result:
            ok(r)
    assert _prometheus_count(server, "edgeservers_inference_seconds_count") == 5
