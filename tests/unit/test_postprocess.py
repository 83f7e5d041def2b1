"""Post-processing (edgeservers/core/postprocess.py): anchors, boxes, NMS, output layouts, classification; pure
functions, where a server round trip would hide which part broke."""

from __future__ import annotations

import numpy as np
import pytest

from edgeservers.core.postprocess import decode_boxes, non_max_suppression, ssd_anchors
from edgeservers.errors import ModelLoadError
from edgeservers.settings import Settings


def test_face_mask_anchor_layout_gives_5972_anchors_centred_on_their_cells():
    maps, sizes, ratios, _ = Settings(model_uri="x").anchor_layout
    anchors = ssd_anchors(maps, sizes, ratios)
    assert anchors.shape == (5972, 4)
    first = anchors[:4]  # cell (0, 0) of the 33x33 map: sizes 0.04, 0.056 at ratio 1, then 0.04 at 0.62 and 0.42
    centre = 0.5 / 33
    np.testing.assert_allclose((first[:, :2] + first[:, 2:]) / 2, centre, rtol=1e-6)
    widths = first[:, 2] - first[:, 0]
    np.testing.assert_allclose(widths, [0.04, 0.056, 0.04 * np.sqrt(0.62), 0.04 * np.sqrt(0.42)], rtol=1e-5)
    heights = first[:, 3] - first[:, 1]
    np.testing.assert_allclose(heights, [0.04, 0.056, 0.04 / np.sqrt(0.62), 0.04 / np.sqrt(0.42)], rtol=1e-5)


def test_zero_deltas_decode_to_the_anchor_itself():
    anchors = np.array([[0.1, 0.2, 0.3, 0.5]], np.float32)
    np.testing.assert_allclose(
        decode_boxes(anchors, np.zeros((1, 4), np.float32), (0.1, 0.1, 0.2, 0.2)), anchors, rtol=1e-6
    )


def test_nms_keeps_the_best_of_overlapping_boxes_and_distant_ones():
    boxes = np.array([[0, 0, 1, 1], [0.05, 0, 1, 1], [2, 2, 3, 3]], np.float32)
    scores = np.array([0.8, 0.9, 0.7], np.float32)
    assert non_max_suppression(boxes, scores, iou_threshold=0.4, limit=10) == [1, 2]
    assert non_max_suppression(boxes, scores, iou_threshold=0.4, limit=1) == [1]


@pytest.mark.parametrize(
    "shape, model_layout, wanted, expected",
    [
        ((1, 513, 513), None, "auto", None),
        ((1, 1, 96, 128), None, "auto", "NCHW"),
        ((1, 96, 128, 1), None, "auto", "NHWC"),
        ((1, 21, 513, 513), None, "auto", "NCHW"),
        ((1, 513, 513, 21), None, "auto", "NHWC"),
        ((1, 8, 8, 8), None, "NCHW", "NCHW"),
        ((1, 8, 8, 8), "NHWC", "auto", "NHWC"),  # the model's own layout
        ((1, 2, 64, 64), "NHWC", "NHWC", "NHWC"),  # ... even against the shape
    ],
)
def test_output_layout_from_the_model_the_parameter_or_the_shape(shape, model_layout, wanted, expected):
    from edgeservers.core.postprocess import output_layout
    from edgeservers.runtimes.base import TensorSpec

    assert output_layout(TensorSpec("map", np.dtype(np.float32), shape, layout=model_layout), wanted) == expected


@pytest.mark.parametrize(
    "shape, model_layout, wanted, words",
    [
        ((1, 8, 8, 8), None, "auto", "may be NHWC or NCHW: set parameter output_layout to NHWC or NCHW"),
        ((1, -1, -1, 3), None, "auto", "may be NHWC or NCHW: set parameter output_layout to NHWC or NCHW"),
        ((1, 1, 96, 128), "NCHW", "NHWC", "output_layout=NHWC: output map is NCHW by the model's own layout"),
    ],
)
def test_output_layout_that_cannot_be_told_stops_the_server(shape, model_layout, wanted, words):
    from edgeservers.core.postprocess import output_layout
    from edgeservers.runtimes.base import TensorSpec

    with pytest.raises(ModelLoadError, match=words):
        output_layout(TensorSpec("map", np.dtype(np.float32), shape, layout=model_layout), wanted)


def test_classification_ranks_raw_unsigned_scores_best_first():
    from edgeservers.core.postprocess import Classification
    from edgeservers.runtimes.base import TensorSpec

    spec = TensorSpec("scores", np.dtype(np.uint8), (1, 4))
    answer = Classification([spec], ["a", "b", "c", "d"], top_k=2)(
        {"scores": np.array([[3, 200, 0, 90]], np.uint8)}, (1, 1)
    )
    assert [a["label"] for a in answer.body] == ["b", "d"] and answer.top_score == 200
