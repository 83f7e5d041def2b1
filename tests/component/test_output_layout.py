"""Segmentation of OpenVINO-layout models: NCHW input taking BGR 0..255, maps [1,1,H,W] and [1,C,H,W].

The models are built here with openvino's opset API; the ground truth is what OpenCV finds on the
image itself, since each model's map is a plain function of one colour channel. In-process (Seldon's
own Flask app): what is tested is the answer, not the processes around it.
"""

from __future__ import annotations

import base64

import cv2
import numpy as np
import openvino as ov
import openvino.opset13 as ops
import pytest

from tests.support.clients import InProcessServer

HEIGHT, WIDTH = 96, 128  # not square, so a swapped height and width shows
BLUE, RED = (255, 0, 0), (0, 0, 255)  # BGR
BLUE_BLOBS = [((20, 20), 9), ((70, 30), 12), ((105, 70), 7)]  # (centre x, y), radius
RED_BLOB = ((35, 70), 10)


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    """Black, three blue discs and one red disc (no anti-aliasing: every pixel is 0 or 255 per channel)."""
    pixels = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
    for centre, radius in BLUE_BLOBS:
        cv2.circle(pixels, centre, radius, BLUE, thickness=-1)
    cv2.circle(pixels, RED_BLOB[0], RED_BLOB[1], RED, thickness=-1)
    return pixels


def _png(pixels: np.ndarray) -> dict:
    ok, png = cv2.imencode(".png", pixels)
    return {"binData": base64.b64encode(png.tobytes()).decode()}


def _expected(mask: np.ndarray) -> tuple[int, list[list[int]]]:
    """Region count and boxes OpenCV finds in a mask of the image itself, sorted."""
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    boxes = [[x, y, x + w, y + h] for x, y, w, h in map(cv2.boundingRect, contours)]
    return len(boxes), sorted(boxes)


def _scaled(channel: ov.Output, scale: float) -> ov.Node:
    """(channel - 127.5) * scale: a logit that is large and positive where the channel is 255, negative where 0."""
    return ops.multiply(ops.subtract(channel, np.float32(127.5)), np.float32(scale))


def _save(result: ov.Node, image_input: ov.Node, target, labels: list[str] | None = None) -> None:
    model = ov.Model([ops.result(result)], [image_input], "segmenter")
    model.output(0).get_tensor().set_names({"map"})
    ov.save_model(model, str(target / "model.xml"))
    if labels:
        (target / "labels.txt").write_text("\n".join(labels) + "\n")


def _image_input() -> tuple[ov.Node, list[ov.Output]]:
    """An NCHW float input of BGR 0..255 pixels, and its three colour planes [1,1,H,W]."""
    image_input = ops.parameter([1, 3, HEIGHT, WIDTH], np.float32, name="image")
    return image_input, ops.split(image_input, 1, 3).outputs()


def _serve(load_server, model_dir, **params) -> InProcessServer:
    return load_server(
        "OpenVINOServer",
        model_uri=str(model_dir),
        postprocess="segmentation",
        channel_order="BGR",
        input_scale="0..255",
        return_mask=True,
        **params,
    )


def _check(answer: dict, mask: np.ndarray) -> None:
    count, boxes = _expected(mask)
    assert answer["count"] == count
    assert sorted(r["box"] for r in answer["regions"]) == boxes
    assert answer["mask_size"] == [HEIGHT, WIDTH]
    got = cv2.imdecode(np.frombuffer(base64.b64decode(answer["mask_png"]), np.uint8), cv2.IMREAD_GRAYSCALE) > 0
    np.testing.assert_array_equal(got, mask)


def test_one_channel_sigmoid_map_nchw_counts_the_blobs_of_that_colour(load_server, tmp_path, image):
    """A defect-style model: sigmoid of the blue channel, [1,1,H,W]: the three blue discs, not the red one."""
    image_input, (blue, _, _) = _image_input()
    _save(ops.sigmoid(_scaled(blue, 1 / 8)), image_input, tmp_path)
    answer = _serve(load_server, tmp_path).rest_ok(_png(image))["jsonData"]
    assert answer["count"] == len(BLUE_BLOBS)
    _check(answer, image[..., 0] > 127)


@pytest.mark.parametrize("segmentation_class", ["", "red"])
def test_class_probability_map_nchw(load_server, tmp_path, image, segmentation_class):
    """Softmax over [background, blue, red] along the channel axis, [1,3,H,W]: every non-background
    class (four discs), or one chosen class."""
    image_input, (blue, _, red) = _image_input()
    background = ops.subtract(ops.subtract(np.full((1, 1, HEIGHT, WIDTH), 255, np.float32), blue), red)
    logits = ops.concat([_scaled(c, 1 / 16) for c in (background, blue, red)], axis=1)
    _save(ops.softmax(logits, 1), image_input, tmp_path, labels=["background", "blue", "red"])
    answer = _serve(load_server, tmp_path, segmentation_class=segmentation_class).rest_ok(_png(image))["jsonData"]
    if segmentation_class == "red":
        assert answer["class"] == "red" and answer["count"] == 1
        _check(answer, image[..., 2] > 127)
    else:
        assert answer["count"] == len(BLUE_BLOBS) + 1
        _check(answer, (image[..., 0] > 127) | (image[..., 2] > 127))
