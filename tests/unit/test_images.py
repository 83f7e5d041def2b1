"""Images (edgeservers/core/images.py): headers read without decoding, max_image_pixels checked before the
decode, OpenCV's own cap, and the reduced-scale decode of large JPEGs (reduced_decode=true) at the largest
scale that still covers the model's input."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from edgeservers.core.images import check_opencv_cap, decode_image, image_header
from edgeservers.errors import BadRequest, ModelLoadError, TooLarge
from tests.support.image_bombs import bmp_header, jpeg_bomb, png_bomb
from tests.support.images import camera_jpeg
from tests.support.paths import image_bytes


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


@pytest.mark.parametrize(
    "size, fit, scale",
    [
        ((4000, 3000), (224, 224), 8),  # 500 x 375: still at least the model's input
        ((1920, 1080), (224, 224), 4),  # 480 x 270
        ((640, 480), (224, 224), 2),
        ((400, 300), (224, 224), 1),  # less than twice the input: a full decode
        ((4000, 3000), (260, 260), 8),
    ],
)
def test_a_jpeg_is_decoded_at_the_largest_scale_that_still_covers_the_input(size, fit, scale):
    width, height = size
    pixels, own_size = decode_image(camera_jpeg("parrot.jpg", width, height), fit=fit)
    assert own_size == (height, width)  # boxes and masks refer to the image sent
    assert pixels.shape[:2] == (-(-height // scale), -(-width // scale))
    assert pixels.shape[0] >= fit[0] and pixels.shape[1] >= fit[1]


def test_png_and_bmp_are_decoded_whole():
    ok, png = cv2.imencode(".png", np.zeros((1000, 1000, 3), np.uint8))
    pixels, size = decode_image(png.tobytes(), fit=(224, 224))
    assert pixels.shape[:2] == size == (1000, 1000)
