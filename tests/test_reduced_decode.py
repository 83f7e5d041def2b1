"""Large camera frames: a JPEG at least twice the model's input in both dimensions is decoded at 1/2,
1/4 or 1/8 scale (OpenCV's IMREAD_REDUCED_*, in the DCT domain); the answers stay those of a full decode."""

from __future__ import annotations

import base64

import cv2
import numpy as np
import pytest

from edgeservers.images import decode_image

from conftest import IMAGES as IMAGES_DIR
from conftest import MOBILENET_V2, labels, plain_outputs, plain_pixels_tensor

PHOTOS = ["parrot.jpg", "cat.bmp", "grace_hopper.bmp", "bird.bmp"]


def camera_jpeg(name: str, width: int, height: int) -> bytes:
    """A bundled photo as a camera would send it: width x height, JPEG quality 90."""
    pixels = cv2.resize(cv2.imread(str(IMAGES_DIR / name)), (width, height), interpolation=cv2.INTER_CUBIC)
    ok, jpeg = cv2.imencode(".jpg", pixels, [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    return jpeg.tobytes()


def _b64(data: bytes) -> dict:
    return {"binData": base64.b64encode(data).decode()}


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


@pytest.mark.parametrize("photo", PHOTOS)
def test_top1_label_is_that_of_a_full_decode(mobilenet_in_process, photo):
    """Against the plain interpreter on the frame decoded whole and resized as the server resizes (bilinear)."""
    frame = camera_jpeg(photo, 4000, 3000)
    full = cv2.imdecode(np.frombuffer(frame, np.uint8), cv2.IMREAD_COLOR)
    (scores,) = plain_outputs(MOBILENET_V2, plain_pixels_tensor(MOBILENET_V2, full)).values()
    reduced = mobilenet_in_process.rest_ok(_b64(frame))["jsonData"][0]
    assert reduced["label"] == labels(MOBILENET_V2)[int(scores.argmax())]


def test_detections_stay_within_a_few_pixels_of_a_full_decode(face_mask_in_process):
    frame = camera_jpeg("face_mask_demo.jpg", 1920, 1080)
    ok, whole = cv2.imencode(".png", cv2.imdecode(np.frombuffer(frame, np.uint8), cv2.IMREAD_COLOR))
    reduced = face_mask_in_process.rest_ok(_b64(frame))["jsonData"]
    reference = face_mask_in_process.rest_ok(_b64(whole.tobytes()))["jsonData"]
    assert [d["label"] for d in reduced] == [d["label"] for d in reference] and reduced
    for got, want in zip(reduced, reference):
        # box coordinates in the 1920 x 1080 image sent: within 1 % of its width
        assert np.abs(np.subtract(got["box"], want["box"])).max() <= 0.01 * 1920, (got, want)
        assert got["score"] == pytest.approx(want["score"], abs=0.05)
