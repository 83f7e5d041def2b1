"""Limits before work: image bombs and oversize gRPC messages are refused before any pixel is decoded or
any message parsed, with a 413 (gRPC: an error status) naming what arrived, the limit and the parameter;
the memory of the whole process tree barely moves, and the next prediction succeeds. Also: gRPC
reflection off by default, gRPC's bind address (tests/unit/test_images.py reads the headers in-process).

The server runs as the chart runs it (1 REST worker, 1 thread) plus one gRPC worker. Peak memory is the
PSS of the whole process tree, sampled while each request runs (tests/support/memory.py's PeakPss).
"""

from __future__ import annotations

import grpc
import numpy as np
import pytest
from seldon_core.proto import prediction_pb2

from tests.support.clients import ModelServer
from tests.support.harness import listening_hosts
from tests.support.image_bombs import bmp_header, jpeg_bomb, png_bomb
from tests.support.memory import PeakPss
from tests.support.paths import MOBILENET_V2, image_bytes
from tests.support.payloads import b64

MAX_GROWTH_MB = 100


@pytest.fixture(scope="module")
def server(start_server) -> ModelServer:
    return start_server(
        "TFLiteServer",
        env={"GUNICORN_WORKERS": "1", "GUNICORN_THREADS": "1", "GRPC_WORKERS": "1"},
        model_uri=str(MOBILENET_V2),
    )


def _next_prediction_succeeds(server: ModelServer) -> None:
    assert server.image("parrot.jpg")["jsonData"][0]["label"] == "macaw"
    reply = server.grpc(prediction_pb2.SeldonMessage(binData=image_bytes("parrot.jpg")))
    assert reply.jsonData.list_value.values[0].struct_value.fields["label"].string_value == "macaw"


# name -> (encoded image, words the answer must contain)
BOMBS = {
    "335-byte 10000 x 10000 JPEG": (
        lambda: jpeg_bomb(10000, 10000),
        ["binData is a 10000 x 10000 JPEG (100,000,000 pixels)"],
    ),
    "20000 x 20000 PNG": (lambda: png_bomb(20000, 20000), ["binData is a 20000 x 20000 PNG (400,000,000 pixels)"]),
    "60000 x 60000 JPEG": (lambda: jpeg_bomb(60000, 60000), ["60000 x 60000 JPEG"]),
    "20000 x 20000 BMP header": (lambda: bmp_header(20000, 20000), ["20000 x 20000 BMP"]),
    "top-down 20000 x 20000 BMP header": (lambda: bmp_header(20000, -20000), ["20000 x 20000 BMP"]),
}


@pytest.mark.parametrize("how", ["REST JSON", "REST multipart", "gRPC binData"])
@pytest.mark.parametrize("bomb", sorted(BOMBS))
def test_image_bomb_is_refused_from_its_header_before_decoding(server, bomb, how):
    build, words = BOMBS[bomb]
    data = build()
    words = words + ["max_image_pixels is 40,000,000"]
    with PeakPss(server.pid) as memory:
        if how == "gRPC binData":
            with pytest.raises(grpc.RpcError) as error:
                server.grpc(prediction_pb2.SeldonMessage(binData=data))
            status, info = error.value.code(), error.value.details()
        else:
            kwargs = (
                {"files": {"binData": ("bomb", data)}} if how == "REST multipart" else {"json": {"binData": b64(data)}}
            )
            response = server.rest(**kwargs)
            status, info = response.status_code, response.json()["status"]["info"]
    if how == "gRPC binData":
        assert status == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert not info.startswith("Exception calling application"), info
    else:
        assert status == 413, info
    for word in words:
        assert word in info, info
    assert memory.growth < MAX_GROWTH_MB, f"the process tree grew {memory.growth} MB while refusing {bomb}"
    _next_prediction_succeeds(server)


def test_an_image_opencv_refuses_answers_413_not_500_with_opencv_text(server):
    """A format whose header we do not read (PGM), declaring 50000 x 50000: OpenCV's own cap
    (OPENCV_IO_MAX_IMAGE_PIXELS, set to the default max_image_pixels) refuses it; the client gets our message."""
    pgm = b"P5\n50000 50000\n255\n" + b"\x00" * 64
    response = server.rest({"binData": b64(pgm)})
    assert response.status_code == 413, response.text
    info = response.json()["status"]["info"]
    assert "OPENCV_IO_MAX_IMAGE_PIXELS" in info and "40,000,000" in info and "OpenCV(" not in info, info
    _next_prediction_succeeds(server)


def test_oversize_grpc_message_gets_resource_exhausted_before_it_is_read(server):
    message = prediction_pb2.SeldonMessage(binData=b"\xff" * ((16 << 20) + 1024))  # max_request_bytes + 1 KiB
    with PeakPss(server.pid) as memory:
        with pytest.raises(grpc.RpcError) as error:
            server.grpc(message)
    assert error.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert str(16 << 20) in error.value.details(), error.value.details()
    assert memory.growth < MAX_GROWTH_MB, f"the process tree grew {memory.growth} MB"
    _next_prediction_succeeds(server)


def test_grpc_accepts_messages_up_to_max_request_bytes_not_grpcs_4_mib():
    """An 8 MiB image (under max_request_bytes, over grpc's default receive limit) is answered."""
    import cv2

    noise = np.random.default_rng(0).integers(0, 256, (1600, 1800, 3), dtype=np.uint8)
    png = cv2.imencode(".png", noise, [cv2.IMWRITE_PNG_COMPRESSION, 0])[1].tobytes()
    assert 5 << 20 < len(png) < 16 << 20
    server = ModelServer(
        "TFLiteServer", env={"GRPC_WORKERS": "1"}, model_uri=str(MOBILENET_V2), max_request_bytes=12 << 20
    ).start()
    try:
        reply = server.grpc(prediction_pb2.SeldonMessage(binData=png))
        assert reply.jsonData.list_value.values[0].struct_value.fields["label"].string_value
        with pytest.raises(grpc.RpcError) as error:
            server.grpc(prediction_pb2.SeldonMessage(binData=png + b"\x00" * (12 << 20)))
        assert error.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert str(12 << 20) in error.value.details()
    finally:
        server.stop()


# --- reflection and bind address --------------------------------------------------------------


def _reflected_services(channel: grpc.Channel) -> list[str]:
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    replies = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=30)
    return [s.name for reply in replies for s in reply.list_services_response.service]


def test_grpc_reflection_is_off_by_default(server):
    with pytest.raises(grpc.RpcError) as error:
        _reflected_services(server.channel())
    assert error.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_grpc_reflection_on_request_and_grpc_bound_to_the_chosen_address():
    server = ModelServer(
        "TFLiteServer", model_uri=str(MOBILENET_V2), grpc_reflection=True, bind_address="127.0.0.1"
    ).start()
    try:
        assert "seldon.protos.Model" in _reflected_services(server.channel())
        hosts = listening_hosts(server.grpc_port)
        assert hosts and hosts <= {"127.0.0.1", "::ffff:127.0.0.1"}, hosts  # (or as IPv4-mapped IPv6)
    finally:
        server.stop()
