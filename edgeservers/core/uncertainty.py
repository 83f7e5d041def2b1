"""What makes an answer uncertain: the criterion `uncertainty` names, against `confidence_threshold`.

The top score alone (`top1`) misses the hard cases a retraining set most needs: two classes nearly tied above
the threshold, a flat distribution whose top score happens to pass, a detection whose boxes are mostly weak.
Hence, after Sedna's hard example mining (kubeedge/sedna: Threshold, CrossEntropy, IBT):

| criterion | uncertain when | for |
|---|---|---|
| `top1` | the top score < t | classification, detection (its best box) |
| `margin` | top score - second score < t | classification |
| `entropy` | the distribution's entropy / log(classes) > 1 - t | classification |
| `weak_boxes` | at least `weak_box_fraction` of the detected boxes score < t | detection |

with t = confidence_threshold. A criterion reads the scores the post-processing leaves on the answer
(postprocess.Answer.scores): classification's whole distribution, detection's kept boxes.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..errors import ModelLoadError
from ..settings import UNCERTAINTY_CRITERIA, Settings
from .postprocess import Answer

Criterion = Callable[[Answer], bool]

# The post-processings each criterion reads; top1 takes any answer with a top score, as it always has.
APPLIES_TO = {"margin": ("classification",), "entropy": ("classification",), "weak_boxes": ("detection",)}


def top1(threshold: float) -> Criterion:
    return lambda answer: answer.top_score is not None and answer.top_score < threshold


def margin(threshold: float) -> Criterion:
    """Uncertain when the top two scores are closer than `threshold` (a single class: its score against 0)."""

    def uncertain(answer: Answer) -> bool:
        scores = _scores(answer)
        if scores.size == 0:
            return False
        two = np.partition(scores, scores.size - 2)[-2:] if scores.size > 1 else np.array([0.0, scores[0]])
        return float(two[1] - two[0]) < threshold

    return uncertain


def entropy(threshold: float) -> Criterion:
    """Uncertain when the normalised entropy (0: one class has it all, 1: all equal) exceeds 1 - `threshold`.
    The scores are taken as probabilities: negatives count as 0 and the rest is scaled to sum to 1 (a softmax
    output, dequantized, sums to about 1 already); all zero is as uncertain as it gets."""

    def uncertain(answer: Answer) -> bool:
        scores = np.clip(_scores(answer).astype(np.float64), 0.0, None)
        total = scores.sum()
        if scores.size < 2:
            return False
        if total <= 0.0:
            return True
        p = scores[scores > 0.0] / total
        return float(-(p * np.log(p)).sum() / np.log(scores.size)) > 1.0 - threshold

    return uncertain


def weak_boxes(threshold: float, fraction: float) -> Criterion:
    """Uncertain when at least `fraction` of the detected boxes score below `threshold` (none detected: certain)."""

    def uncertain(answer: Answer) -> bool:
        scores = _scores(answer)
        return scores.size > 0 and float(np.count_nonzero(scores < threshold)) >= fraction * scores.size

    return uncertain


def criterion(settings: Settings, postprocess_kind: str) -> Criterion | None:
    """The criterion the parameters choose, None without confidence_threshold; a ModelLoadError at start when it
    does not apply to the model's post-processing."""
    threshold = settings.confidence_threshold
    if threshold is None:
        return None
    name = settings.uncertainty
    applies = APPLIES_TO.get(name)
    if applies is not None and postprocess_kind not in applies:
        fitting = [c for c in UNCERTAINTY_CRITERIA if postprocess_kind in APPLIES_TO.get(c, (postprocess_kind,))]
        raise ModelLoadError(
            f"parameter uncertainty={name} needs postprocess={' or '.join(applies)}; this model's is "
            f"{postprocess_kind}: use uncertainty={' or '.join(fitting)}"
        )
    if name == "margin":
        return margin(threshold)
    if name == "entropy":
        return entropy(threshold)
    if name == "weak_boxes":
        return weak_boxes(threshold, settings.weak_box_fraction)
    return top1(threshold)


def _scores(answer: Answer) -> np.ndarray:
    return np.zeros(0, np.float32) if answer.scores is None else answer.scores.reshape(-1)
