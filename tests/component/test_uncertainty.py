"""What makes an answer uncertain, on real models in the server (in-process), against what the plain
interpreter's outputs say (the criteria on crafted outputs: tests/unit/test_uncertainty.py)."""

from __future__ import annotations

import numpy as np
import pytest

from tests.support.ground_truth import plain_image_tensor, plain_interpreter, plain_outputs
from tests.support.paths import FACE_MASK, MOBILENET_V1, tflite_file

# --- real models in the server ----------------------------------------------------------------------------

PHOTOS = ("parrot.jpg", "cat.bmp", "bird.bmp", "grace_hopper.bmp", "face_mask_demo.jpg")


def plain_scores(photo: str) -> np.ndarray:
    """The small classifier's whole distribution for a photo, from the plain interpreter, dequantized."""
    (raw,) = plain_outputs(MOBILENET_V1, plain_image_tensor(MOBILENET_V1, photo)).values()
    scale, zero = plain_interpreter(tflite_file(MOBILENET_V1)).get_output_details()[0]["quantization"]
    return (raw.reshape(-1).astype(np.float64) - zero) * scale


@pytest.mark.parametrize(
    "criterion, threshold, expected",
    [
        ("margin", 0.15, lambda p: np.sort(p)[-1] - np.sort(p)[-2] < 0.15),
        ("entropy", 0.75, lambda p: -(q := p[p > 0] / p.sum()) @ np.log(q) / np.log(p.size) > 0.25),
    ],
)
def test_classifier_criteria_in_the_server_agree_with_the_plain_interpreter(
    load_server, criterion, threshold, expected
):
    server = load_server(
        "TFLiteServer", model_uri=str(MOBILENET_V1), uncertainty=criterion, confidence_threshold=threshold
    )
    tags = {photo: server.image(photo)["meta"]["tags"]["uncertain"] for photo in PHOTOS}
    assert tags == {photo: bool(expected(plain_scores(photo))) for photo in PHOTOS}
    assert set(tags.values()) == {True, False}, tags  # the criterion tells these photos apart


def test_weak_boxes_in_the_server_finds_the_detection_whose_boxes_are_mostly_weak(load_server):
    """With candidates from 0.2, the detector finds one sure face in grace_hopper.bmp and three weak ones: its top
    score passes, most of its boxes do not; one sure box on the demo photo; nothing on the parrot."""
    common = {"model_uri": str(FACE_MASK), "postprocess": "detection", "score_threshold": 0.2}
    weak = load_server("TFLiteServer", uncertainty="weak_boxes", confidence_threshold=0.5, **common)
    top = load_server("TFLiteServer", confidence_threshold=0.5, **common)
    for photo in ("grace_hopper.bmp", "face_mask_demo.jpg", "parrot.jpg"):
        reply = weak.image(photo)
        scores = [box["score"] for box in reply["jsonData"]]
        assert reply["meta"]["tags"]["uncertain"] == (bool(scores) and sum(s < 0.5 for s in scores) >= len(scores) / 2)
        assert top.image(photo)["meta"]["tags"]["uncertain"] == (bool(scores) and max(scores) < 0.5)
    assert weak.image("grace_hopper.bmp")["meta"]["tags"]["uncertain"] is True
    assert top.image("grace_hopper.bmp")["meta"]["tags"]["uncertain"] is False
