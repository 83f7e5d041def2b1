"""Limits before work: image bombs and oversize gRPC messages are refused before any pixel is decoded or
any message parsed, with a 413 (gRPC: an error status) naming what arrived, the limit and the parameter;
the memory of the whole process tree barely moves, and the next prediction succeeds. Also: gRPC
reflection off by default, gRPC's bind address.

The server runs as the chart runs it (1 REST worker, 1 thread) plus one gRPC worker. Peak memory is the
PSS of the whole process tree, sampled while each request runs (bench/hostile.py, bench/image_bombs.py).
"""

from __future__ import annotations

import base64

import grpc
import numpy as np
import pytest
from seldon_core.proto import prediction_pb2

from bench.hostile import PeakPss
from bench.image_bombs import bmp_header, jpeg_bomb, png_bomb
from edgeservers.core.images import check_opencv_cap, decode_image, image_header
from edgeservers.errors import BadRequest, ModelLoadError, TooLarge

from conftest import MOBILENET_V2, ModelServer, image_bytes

MAX_GROWTH_MB = 100


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


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
    with PeakPss(server.proc.pid) as memory:
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
    with PeakPss(server.proc.pid) as memory:
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


def _listening_hosts(port: int) -> set[str]:
    hosts = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for line in list(f)[1:]:
                local, state = line.split()[1], line.split()[3]
                address, port_hex = local.split(":")
                if state == "0A" and int(port_hex, 16) == port:
                    hosts.add(address)
    return hosts


def test_grpc_reflection_on_request_and_grpc_bound_to_the_chosen_address():
    server = ModelServer(
        "TFLiteServer", model_uri=str(MOBILENET_V2), grpc_reflection=True, bind_address="127.0.0.1"
    ).start()
    try:
        assert "seldon.protos.Model" in _reflected_services(server.channel())
        hosts = _listening_hosts(server.grpc_port)
        assert hosts and hosts <= {"0100007F", "0000000000000000FFFF00000100007F"}, (
            hosts
        )  # 127.0.0.1 (or as IPv4-mapped IPv6)
    finally:
        server.stop()


# --- header reading, in process -----------------------------------------------------------------


def test_headers_of_jpeg_png_and_bmp_are_read_without_decoding():
    assert image_header(image_bytes("parrot.jpg")) == ("JPEG", 512, 929)
    assert image_header(image_bytes("cat.bmp")) == ("BMP", 512, 341)
    assert image_header(png_bomb(20000, 30000)) == ("PNG", 20000, 30000)
    assert image_header(bmp_header(7, -9)) == ("BMP", 7, 9)
    core = b"BM" + b"\x00" * 12 + (12).to_bytes(4, "little") + (300).to_bytes(2, "little") + (200).to_bytes(2, "little")
    assert image_header(core + b"\x00" * 8) == ("BMP", 300, 200)
    # fill bytes and an APP segment before the frame header
    jpeg = jpeg_bomb(321, 123)
    assert image_header(jpeg[:2] + b"\xff\xff\xe1\x00\x04ab" + jpeg[2:]) == ("JPEG", 321, 123)
    for garbage in (b"", b"\xff\xd8", b"\xff\xd8\xff\xda\x00\x02", b"GIF89a....", b"\x89PNG\r\n\x1a\n"):
        assert image_header(garbage) is None


def test_a_max_image_pixels_over_opencvs_own_cap_stops_the_server_at_start():
    with pytest.raises(
        ModelLoadError, match="max_image_pixels=50000000 exceeds .* OPENCV_IO_MAX_IMAGE_PIXELS=40000000"
    ):
        check_opencv_cap(50_000_000)
    check_opencv_cap(40_000_000)


def test_max_image_pixels_is_checked_before_decoding_and_garbage_stays_400():
    parrot = image_bytes("parrot.jpg")
    with pytest.raises(TooLarge, match=r"512 x 929 JPEG \(475,648 pixels\); max_image_pixels is 400,000"):
        decode_image(parrot, 400_000)
    assert decode_image(parrot, 475_648)[0].shape == (929, 512, 3)
    with pytest.raises(BadRequest, match="not a decodable image"):
        decode_image(jpeg_bomb(100, 100)[:40], 40_000_000)
