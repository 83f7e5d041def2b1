"""Many clients at once on one server with a pool: every answer equals the sequential answer."""

from __future__ import annotations

import base64
from concurrent.futures import ThreadPoolExecutor

import pytest
from google.protobuf import json_format
from seldon_core.proto import prediction_pb2

from tests.support.paths import MOBILENET_V2, image_bytes

IMAGES = ["parrot.jpg", "cat.bmp", "grace_hopper.bmp", "bird.bmp", "face_mask_demo.jpg", "bird_segmentation.bmp"]
THREADS = 16
ROUNDS = 3  # requests per thread

# Four REST threads in one gunicorn worker and four gRPC threads, each sharing a pool of four.
POOLED = {"GUNICORN_THREADS": "4", "GRPC_THREADS": "4"}


def _sequential(server):
    return {image: server.image(image)["jsonData"] for image in IMAGES}


def _hammer(call):
    jobs = [IMAGES[(t + r) % len(IMAGES)] for t in range(THREADS) for r in range(ROUNDS)]
    with ThreadPoolExecutor(THREADS) as pool:
        return list(zip(jobs, pool.map(call, jobs)))


@pytest.mark.parametrize("server_class", ["TFLiteServer", "OpenVINOServer"])
def test_sixteen_threads_over_rest_and_grpc_get_the_sequential_answers(start_server, server_class):
    server = start_server(server_class, env=POOLED, model_uri=str(MOBILENET_V2), pool_size=4, num_threads=1)
    expected = _sequential(server)

    def rest(image):
        response = server.rest({"binData": base64.b64encode(image_bytes(image)).decode()})
        assert response.status_code == 200, response.text
        return response.json()["jsonData"]

    def grpc(image):
        reply = server.grpc(prediction_pb2.SeldonMessage(binData=image_bytes(image)))
        return json_format.MessageToDict(reply.jsonData)

    for call in (rest, grpc):
        for image, answer in _hammer(call):
            assert answer == expected[image], image
