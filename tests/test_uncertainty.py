"""What makes an answer uncertain (core/uncertainty.py): each criterion on crafted outputs, then on real models in
the server, against what the plain interpreter's outputs say."""

from __future__ import annotations

import math

import numpy as np
import pytest

from edgeservers.core import uncertainty
from edgeservers.core.postprocess import Answer
from edgeservers.errors import ModelLoadError
from edgeservers.settings import Settings

from conftest import FACE_MASK, MOBILENET_V1, plain_image_tensor, plain_interpreter, plain_outputs, tflite_file


def classified(*scores: float) -> Answer:
    values = np.array(scores, np.float32)
    return Answer([], float(values.max()) if values.size else None, values)


def detected(*scores: float) -> Answer:
    values = np.array(sorted(scores, reverse=True), np.float32)
    return Answer([], float(values[0]) if values.size else None, values)


def judge(criterion: str, threshold: float, answer: Answer, kind: str = "classification", **params) -> bool:
    settings = Settings.from_parameters(
        {"model_uri": "m", "uncertainty": criterion, "confidence_threshold": threshold, **params}
    )
    found = uncertainty.criterion(settings, kind)
    assert found is not None
    return found(answer)


# --- crafted outputs ------------------------------------------------------------------------------------


def test_top1_is_the_top_score_below_the_threshold():
    assert judge("top1", 0.5, classified(0.45, 0.3, 0.25))
    assert not judge("top1", 0.5, classified(0.55, 0.44, 0.01))
    assert not judge("top1", 0.5, Answer([], None))  # nothing detected: no top score, not uncertain
    assert judge("top1", 0.5, detected(0.45), "detection")


def test_margin_catches_a_near_tie_that_top1_passes():
    tie = classified(0.51, 0.47, 0.02)
    assert not judge("top1", 0.5, tie)
    assert judge("margin", 0.1, tie)  # 0.04 apart
    assert not judge("margin", 0.1, classified(0.3, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1))  # low, but clearly ahead
    assert judge("margin", 0.1, classified(0.05))  # one class: its score against nothing
    assert not judge("margin", 0.1, classified(0.5))
    assert not judge("margin", 0.1, classified())


def test_entropy_catches_a_flat_distribution_and_reads_the_whole_of_it():
    flat = classified(*([0.6] + [0.4 / 999] * 999))  # top1 passes; the rest spread over 999 classes
    assert not judge("top1", 0.5, flat)
    normalised = -(0.6 * math.log(0.6) + 0.4 * math.log(0.4 / 999)) / math.log(1000)  # 0.44
    assert judge("entropy", 1 - normalised + 0.01, flat) and not judge("entropy", 1 - normalised - 0.01, flat)
    assert not judge("entropy", 0.5, classified(0.6, 0.4, *([0.0] * 998)))  # two classes share it: low entropy
    assert judge("entropy", 0.1, classified(*([0.1] * 10)))  # all equal: 1, the most uncertain
    assert not judge("entropy", 0.99, classified(1.0, 0.0, 0.0))  # one class has it all: 0
    assert judge("entropy", 0.5, classified(0.0, 0.0))  # nothing at all
    assert judge("entropy", 0.5, classified(2.0, 2.0, -1.0)) == judge("entropy", 0.5, classified(0.5, 0.5, 0.0))


def test_weak_boxes_catches_a_detection_whose_boxes_are_mostly_weak():
    weak = detected(0.95, 0.55, 0.52)
    assert not judge("top1", 0.6, weak, "detection")  # its best box is sure
    assert judge("weak_boxes", 0.6, weak, "detection")  # 2 of 3 below 0.6
    assert not judge("weak_boxes", 0.6, weak, "detection", weak_box_fraction=0.7)
    assert not judge("weak_boxes", 0.6, detected(0.95, 0.9, 0.52), "detection")
    assert not judge("weak_boxes", 0.6, detected(), "detection")  # nothing detected: no weak boxes either


@pytest.mark.parametrize(
    "criterion, kind, fits",
    [("margin", "detection", "top1 or weak_boxes"), ("weak_boxes", "classification", "top1 or margin or entropy")],
)
def test_a_criterion_that_does_not_fit_the_post_processing_stops_the_server(criterion, kind, fits):
    settings = Settings.from_parameters({"model_uri": "m", "uncertainty": criterion, "confidence_threshold": 0.5})
    with pytest.raises(ModelLoadError, match=f"uncertainty={criterion} needs postprocess=.*use uncertainty={fits}"):
        uncertainty.criterion(settings, kind)


@pytest.mark.parametrize(
    "params, message",
    [
        ({"uncertainty": "cross_entropy"}, "uncertainty='cross_entropy': expected one of top1, margin, entropy"),
        (
            {"uncertainty": "margin", "confidence_threshold": 1.5},
            "expected a number from 0 to 1 for uncertainty=margin",
        ),
        ({"weak_box_fraction": 0}, "weak_box_fraction=0.0: expected a share above 0, at most 1"),
        ({"weak_box_fraction": 1.5}, "weak_box_fraction=1.5"),
    ],
)
def test_bad_criterion_parameters_are_refused_naming_them(params, message):
    with pytest.raises(ModelLoadError, match=message.replace("(", r"\(").replace(")", r"\)")):
        Settings.from_parameters({"model_uri": "m", **params})


def test_without_confidence_threshold_nothing_is_judged():
    assert uncertainty.criterion(Settings.from_parameters({"model_uri": "m", "uncertainty": "margin"}), "x") is None


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
