"""What makes an answer uncertain (core/uncertainty.py): each criterion on crafted outputs (the criteria on real
models in the server: tests/component/test_uncertainty.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from edgeservers.core import uncertainty
from edgeservers.core.postprocess import Answer
from edgeservers.errors import ModelLoadError
from edgeservers.settings import Settings


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
