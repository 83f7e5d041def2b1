"""TFLiteServer end to end (the real `seldon-core-microservice`): every way of sending an image gives the same
answer over REST and gRPC; metadata, health, tags and Prometheus; the pool adapts to the wrapper's threads."""

from __future__ import annotations

import base64

import requests
from google.protobuf import json_format
from seldon_core.proto import prediction_pb2

from tests.support.paths import MOBILENET_V2, image_bytes


def test_multipart_form_strdata_and_grpc_bindata_give_the_same_answer(mobilenet):
    by_json = mobilenet.image("parrot.jpg")["jsonData"]
    by_form = mobilenet.rest_ok(files={"binData": ("parrot.jpg", image_bytes("parrot.jpg"))})["jsonData"]
    by_str = mobilenet.rest_ok({"strData": base64.b64encode(image_bytes("parrot.jpg")).decode()})["jsonData"]
    reply = mobilenet.grpc(prediction_pb2.SeldonMessage(binData=image_bytes("parrot.jpg")))
    by_grpc = json_format.MessageToDict(reply.jsonData)
    assert by_json == by_form == by_str == by_grpc
    assert by_json[0]["label"] == "macaw"


def test_metadata_health_tags_and_metrics(mobilenet):
    metadata = mobilenet.get("/api/v1.0/metadata").json()
    assert metadata["platform"] == "tflite"
    assert metadata["inputs"] == [{"name": "input", "datatype": "UINT8", "shape": [1, 224, 224, 3]}]
    assert metadata["outputs"] == [{"name": "MobilenetV2/Predictions/Softmax", "datatype": "UINT8", "shape": [1, 1001]}]

    health = mobilenet.get("/health/status")
    assert health.status_code == 200 and "ok" in health.text

    reply = mobilenet.image("parrot.jpg")
    assert reply["meta"]["tags"] == {"model": "mobilenet_v2_1.0_224_quant", "runtime": "tflite"}
    prometheus = mobilenet.prometheus()
    for key in ("edgeservers_preprocess_seconds", "edgeservers_inference_seconds", "edgeservers_postprocess_seconds"):
        assert key in prometheus


def test_pool_and_threads_adapt_to_the_wrapper_threads_and_the_cpus(start_server):
    import os

    server = start_server("TFLiteServer", env={"GUNICORN_THREADS": "8"}, model_uri=str(MOBILENET_V2))
    custom = requests.get(server.url + "/api/v1.0/metadata", timeout=10).json()["custom"]
    cpus = len(os.sched_getaffinity(0))
    pool = min(8, cpus)
    assert (int(custom["pool_size"]), int(custom["num_threads"])) == (pool, cpus)
    assert custom["slot_threads"] == ",".join(map(str, [cpus] + [max(1, cpus // pool)] * (pool - 1)))
    assert server.image("parrot.jpg")["jsonData"][0]["label"] == "macaw"
