"""Large camera frames with reduced_decode=true: a JPEG at least twice the model's input in both dimensions is
decoded at 1/2, 1/4 or 1/8 scale (OpenCV's IMREAD_REDUCED_*, in the DCT domain), close to a full decode but not
always the same answer; by default every image is decoded whole, so answers are those of the model's reference
preprocessing at any size."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from tests.support.fixtures import DETECTOR
from tests.support.ground_truth import plain_outputs, plain_pixels_tensor
from tests.support.images import camera_jpeg
from tests.support.paths import MOBILENET_V1, MOBILENET_V2, image_bytes, labels
from tests.support.payloads import b64

PHOTOS = ["parrot.jpg", "cat.bmp", "grace_hopper.bmp", "bird.bmp"]


def _b64(data: bytes) -> dict:
    return {"binData": b64(data)}


@pytest.fixture(scope="module")
def mobilenet_reduced(load_server):
    return load_server("TFLiteServer", model_uri=str(MOBILENET_V2), reduced_decode=True)


@pytest.mark.parametrize("photo", PHOTOS)
def test_top1_label_is_that_of_a_full_decode(mobilenet_reduced, photo):
    """Against the plain interpreter on the frame decoded whole and resized as the server resizes (bilinear)."""
    frame = camera_jpeg(photo, 4000, 3000)
    full = cv2.imdecode(np.frombuffer(frame, np.uint8), cv2.IMREAD_COLOR)
    (scores,) = plain_outputs(MOBILENET_V2, plain_pixels_tensor(MOBILENET_V2, full)).values()
    reduced = mobilenet_reduced.rest_ok(_b64(frame))["jsonData"][0]
    assert reduced["label"] == labels(MOBILENET_V2)[int(scores.argmax())]


def test_detections_stay_within_a_few_pixels_of_a_full_decode(load_server):
    reducing = load_server("TFLiteServer", **DETECTOR, reduced_decode=True)
    frame = camera_jpeg("face_mask_demo.jpg", 1920, 1080)
    ok, whole = cv2.imencode(".png", cv2.imdecode(np.frombuffer(frame, np.uint8), cv2.IMREAD_COLOR))
    reduced = reducing.rest_ok(_b64(frame))["jsonData"]
    reference = reducing.rest_ok(_b64(whole.tobytes()))["jsonData"]
    assert [d["label"] for d in reduced] == [d["label"] for d in reference] and reduced
    for got, want in zip(reduced, reference):
        # box coordinates in the 1920 x 1080 image sent: within 1 % of its width
        assert np.abs(np.subtract(got["box"], want["box"])).max() <= 0.01 * 1920, (got, want)
        assert got["score"] == pytest.approx(want["score"], abs=0.05)


def test_by_default_a_jpeg_at_twice_the_input_gets_the_answer_of_a_full_decode(load_server):
    """images/bird_at_twice_the_input.jpg: 256 x 256, exactly twice mobilenet_v1_025's input, where the two decodes
    disagree clearly (not a near tie): the default answer is the plain interpreter's on the image decoded whole;
    reduced_decode=true, the user's trade, answers otherwise."""
    jpeg = image_bytes("bird_at_twice_the_input.jpg")
    full = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    (scores,) = plain_outputs(MOBILENET_V1, plain_pixels_tensor(MOBILENET_V1, full)).values()
    reference = labels(MOBILENET_V1)[int(scores.argmax())]
    default = load_server("TFLiteServer", model_uri=str(MOBILENET_V1))
    assert default.rest_ok(_b64(jpeg))["jsonData"][0]["label"] == reference == "black grouse"
    reducing = load_server("TFLiteServer", model_uri=str(MOBILENET_V1), reduced_decode=True)
    assert reducing.rest_ok(_b64(jpeg))["jsonData"][0]["label"] == "bulbul"
