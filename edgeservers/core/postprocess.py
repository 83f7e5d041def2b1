"""Model outputs -> answers people use: top-k labels, detected boxes, or a defect mask with a count.

Each post-processor is built once at start (where it checks the model fits it) and then called
per request with the selected outputs, already dequantized, and the size of the original image.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from ..errors import ModelLoadError
from ..runtimes.base import TensorSpec
from ..settings import Settings

Size = tuple[int, int]  # (height, width) in pixels


@dataclass(frozen=True)
class Answer:
    """A post-processed answer, its top score, and the scores the uncertainty criteria read
    (core/uncertainty.py): classification's whole distribution, detection's kept boxes best first."""

    body: Any
    top_score: float | None = None
    scores: np.ndarray | None = field(default=None, compare=False)


# Called with the outputs and the (height, width) of the image sent: None for tensor payloads, which
# only classification takes (detection and segmentation need an image input, checked at start).
Postprocessor = Callable[[Mapping[str, np.ndarray], Size | None], Answer]


def _one_output(kind: str, outputs: Sequence[TensorSpec]) -> TensorSpec:
    """The single output `kind` works on, or a ModelLoadError listing what was selected."""
    if len(outputs) != 1:
        raise ModelLoadError(
            f"postprocess={kind} needs one output; selected {len(outputs)} "
            f"({', '.join(o.name for o in outputs)}): choose one with output_tensor_name"
        )
    return outputs[0]


def _label(labels: Sequence[str] | None, index: int) -> str:
    return labels[index] if labels and 0 <= index < len(labels) else str(index)


class Classification:
    """Top-k {label, index, score}, best first, from the one output's scores."""

    def __init__(self, outputs: Sequence[TensorSpec], labels: Sequence[str] | None, top_k: int):
        self._name = _one_output("classification", outputs).name
        self._labels = labels
        self._top_k = top_k

    def __call__(self, outputs: Mapping[str, np.ndarray], image_size: Size | None) -> Answer:
        scores = outputs[self._name].reshape(-1).astype(np.float32, copy=False)  # unsigned raw scores cannot be negated
        k = min(self._top_k, scores.size)
        top = np.argpartition(-scores, k - 1)[:k]
        top = top[np.argsort(-scores[top], kind="stable")]
        body = [{"label": _label(self._labels, int(i)), "index": int(i), "score": float(scores[i])} for i in top]
        return Answer(body, float(scores[top[0]]) if k else None, scores)


def ssd_anchors(feature_maps: Sequence[int], sizes: Sequence[Sequence[float]], ratios: Sequence[float]) -> np.ndarray:
    """Anchors [N, 4] as (xmin, ymin, xmax, ymax) in 0..1, in the order the face-mask detector emits them.

    Per cell: every size with the first ratio, then the first size with each further ratio.
    """
    anchors = []
    for cells, cell_sizes in zip(feature_maps, sizes):
        centers = (np.arange(cells, dtype=np.float32) + 0.5) / cells
        cx, cy = np.meshgrid(centers, centers)
        shapes = [(s, ratios[0]) for s in cell_sizes] + [(cell_sizes[0], r) for r in ratios[1:]]
        half = np.array([[s * np.sqrt(r) / 2, s / np.sqrt(r) / 2] for s, r in shapes], np.float32)
        grid = np.stack([cx, cy], axis=-1).reshape(-1, 1, 2)  # [cells*cells, 1, 2]
        anchors.append(np.concatenate([grid - half, grid + half], axis=-1).reshape(-1, 4))
    return np.concatenate(anchors)


def decode_boxes(anchors: np.ndarray, deltas: np.ndarray, variances: Sequence[float]) -> np.ndarray:
    """SSD box decoding: deltas (dx, dy, dw, dh) scaled by the variances, relative to each anchor."""
    d = deltas * np.asarray(variances, np.float32)
    size = anchors[:, 2:] - anchors[:, :2]
    center = (anchors[:, :2] + anchors[:, 2:]) / 2 + d[:, :2] * size
    half = np.exp(d[:, 2:]) * size / 2
    return np.concatenate([center - half, center + half], axis=-1)


def non_max_suppression(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float, limit: int) -> list[int]:
    """Indices of the boxes kept, best first (greedy NMS over all classes, as the detector's upstream does).

    Written with numpy because the lean armv7 OpenCV build carries no dnn module (cv2.dnn.NMSBoxes).
    """
    order = np.argsort(-scores, kind="stable")
    areas = np.prod(np.clip(boxes[:, 2:] - boxes[:, :2], 0, None), axis=1)
    keep: list[int] = []
    while order.size and len(keep) < limit:
        best, rest = order[0], order[1:]
        keep.append(int(best))
        low = np.maximum(boxes[best, :2], boxes[rest, :2])
        high = np.minimum(boxes[best, 2:], boxes[rest, 2:])
        overlap = np.prod(np.clip(high - low, 0, None), axis=1)
        iou = overlap / (areas[best] + areas[rest] - overlap + 1e-9)
        order = rest[iou <= iou_threshold]
    return keep


class Detection:
    """SSD-style anchor detection: {label, score, box} with box = [xmin, ymin, xmax, ymax] in image pixels."""

    def __init__(self, outputs: Sequence[TensorSpec], labels: Sequence[str] | None, settings: Settings):
        boxes = [o for o in outputs if o.shape[-1] == 4]
        scores = [o for o in outputs if o.shape[-1] != 4]
        if len(outputs) != 2 or len(boxes) != 1:
            raise ModelLoadError(
                "postprocess=detection needs two outputs, box deltas [1, N, 4] and class scores [1, N, classes]; "
                f"selected: {', '.join(f'{o.name} {list(o.shape)}' for o in outputs)}"
            )
        self._boxes, self._scores = boxes[0].name, scores[0].name
        maps, sizes, ratios, self._variances = settings.anchor_layout
        self._anchors = ssd_anchors(maps, sizes, ratios)
        if self._anchors.shape[0] != boxes[0].shape[-2]:
            raise ModelLoadError(
                f"the anchor layout gives {self._anchors.shape[0]} anchors but {self._boxes} has "
                f"{boxes[0].shape[-2]} boxes: set anchor_feature_maps, anchor_sizes, anchor_ratios for this model"
            )
        self._labels = labels
        self._settings = settings

    def __call__(self, outputs: Mapping[str, np.ndarray], image_size: Size | None) -> Answer:
        s = self._settings
        class_scores = outputs[self._scores].reshape(self._anchors.shape[0], -1)
        best_class = class_scores.argmax(axis=1)
        best_score = class_scores[np.arange(best_class.size), best_class]
        candidates = np.flatnonzero(best_score >= s.score_threshold)
        boxes = decode_boxes(
            self._anchors[candidates], outputs[self._boxes].reshape(-1, 4)[candidates], self._variances
        )
        kept = non_max_suppression(boxes, best_score[candidates], s.nms_iou_threshold, s.max_detections)
        assert image_size is not None, "detection needs an image input (checked at start)"
        height, width = image_size
        scale = np.array([width, height, width, height], np.float32)
        body = []
        for k in kept:
            box = np.clip(boxes[k], 0.0, 1.0) * scale
            index = int(best_class[candidates[k]])
            body.append(
                {
                    "label": _label(self._labels, index),
                    "index": index,
                    "score": float(best_score[candidates[k]]),
                    "box": [int(round(v)) for v in box],
                }
            )
        box_scores = best_score[candidates[kept]] if kept else np.zeros(0, np.float32)
        return Answer(body, float(box_scores[0]) if kept else None, box_scores)


def output_layout(spec: TensorSpec, wanted: str) -> str | None:
    """NHWC or NCHW for a 4-D map ([1,H,W,C] or [1,C,H,W]); None for a [1,H,W] one.

    In this order: the model's own layout (OpenVINO rt_info; `wanted` may not contradict it), the
    output_layout parameter, then the shape: channels are the one end dimension smaller than both
    others ([1,1,H,W] and [1,21,513,513] are NCHW, [1,H,W,1] and [1,513,513,21] NHWC). Anything else
    ([1,8,8,8], a dynamic size) is ambiguous and needs output_layout.
    """
    if len(spec.shape) != 4:
        return None
    if spec.layout:
        if wanted not in ("auto", spec.layout):
            raise ModelLoadError(
                f"parameter output_layout={wanted}: output {spec.name} is {spec.layout} by the model's own layout; "
                f"set output_layout to auto or {spec.layout}"
            )
        return spec.layout
    if wanted != "auto":
        return wanted
    _, d1, d2, d3 = spec.shape
    if min(d1, d2, d3) > 0:
        if d1 < d2 and d1 < d3:
            return "NCHW"
        if d3 < d1 and d3 < d2:
            return "NHWC"
    raise ModelLoadError(
        f"output {spec.name} has shape {list(spec.shape)}, which may be NHWC or NCHW: "
        f"set parameter output_layout to NHWC or NCHW"
    )


class Segmentation:
    """A binary mask from a class map or probability map, and its connected regions via OpenCV contours."""

    def __init__(self, outputs: Sequence[TensorSpec], labels: Sequence[str] | None, settings: Settings):
        self._output = _one_output("segmentation", outputs)
        if not (len(self._output.shape) == 2 or len(self._output.shape) in (3, 4) and self._output.shape[0] in (1, -1)):
            raise ModelLoadError(
                f"postprocess=segmentation needs a map [H,W], [1,H,W], [1,H,W,C] or [1,C,H,W]; "
                f"{self._output.name} has shape {list(self._output.shape)}"
            )
        self._layout = output_layout(self._output, settings.output_layout)
        self._labels = labels
        self._settings = settings
        self._class = self._class_index(settings.segmentation_class, labels)

    @staticmethod
    def _class_index(wanted: str, labels: Sequence[str] | None) -> int | None:
        if not wanted:
            return None
        if wanted.isdigit():
            return int(wanted)
        if labels and wanted in labels:
            return labels.index(wanted)
        raise ModelLoadError(
            f"segmentation_class={wanted!r} is neither a class index nor one of the labels"
            + (f" ({', '.join(labels)})" if labels else " (the model has no labels file)")
        )

    def _mask(self, output: np.ndarray) -> np.ndarray:
        """True where the chosen class is (any non-background class when none is chosen)."""
        if output.ndim > 2:
            output = output[0]
        if self._layout == "NCHW":
            output = output.transpose(1, 2, 0)
        if output.ndim == 3 and output.shape[-1] == 1:
            output = output[..., 0]
        if output.ndim == 3:  # per-class probabilities [H, W, C]
            if self._class is None:
                return output.argmax(axis=-1) != 0
            return output[..., self._class] > self._settings.mask_threshold
        if output.dtype.kind in "ui":  # class map [H, W]
            return output == self._class if self._class is not None else output != 0
        return output > self._settings.mask_threshold  # one-class probability map [H, W]

    def __call__(self, outputs: Mapping[str, np.ndarray], image_size: Size | None) -> Answer:
        mask: np.ndarray = self._mask(outputs[self._output.name]).astype(np.uint8)
        assert image_size is not None, "segmentation needs an image input (checked at start)"
        height, width = image_size
        if mask.shape != (height, width):
            mask = cv2.resize(mask, (width, height), interpolation=cv2.INTER_NEAREST)
        contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        regions: list[dict[str, Any]] = []
        for contour in contours:
            area = float(cv2.contourArea(contour))
            if area < self._settings.min_region_area:
                continue
            x, y, w, h = cv2.boundingRect(contour)
            regions.append({"area": area, "box": [x, y, x + w, y + h]})
        regions.sort(key=lambda r: -r["area"])
        body: dict[str, Any] = {
            "class": None if self._class is None else _label(self._labels, self._class),
            "count": len(regions),
            "regions": regions,
            "mask_pixels": int(mask.sum()),
            "mask_size": [height, width],
        }
        if self._settings.return_mask:
            ok, png = cv2.imencode(".png", mask * 255)
            body["mask_png"] = base64.b64encode(png.tobytes()).decode("ascii")
        return Answer(body)


def build(
    kind: str, outputs: Sequence[TensorSpec], labels: Sequence[str] | None, settings: Settings
) -> Postprocessor | None:
    """The post-processor for `kind` (already resolved from `auto`), taking the model's raw outputs; None for raw outputs."""
    processor: Postprocessor
    if kind == "classification":
        processor = Classification(outputs, labels, settings.top_k)
    elif kind == "detection":
        processor = Detection(outputs, labels, settings)
    elif kind == "segmentation":
        processor = Segmentation(outputs, labels, settings)
    else:
        return None
    return _dequantized(processor, outputs)


def _dequantized(processor: Postprocessor, outputs: Sequence[TensorSpec]) -> Postprocessor:
    """`processor` fed real values: quantized outputs are first dequantized with their own scale and zero point."""
    quantized = [spec for spec in outputs if spec.quantization is not None]
    if not quantized:
        return processor

    def run(raw: Mapping[str, np.ndarray], image_size: Size | None) -> Answer:
        real = dict(raw)
        for spec in quantized:
            assert spec.quantization is not None
            real[spec.name] = spec.quantization.dequantize(raw[spec.name])
        return processor(real, image_size)

    return run


def resolve(kind: str, outputs: Sequence[TensorSpec], labels: Sequence[str] | None) -> str:
    """`auto` is classification for a model with one output and labels, else raw outputs."""
    if kind != "auto":
        return kind
    return "classification" if len(outputs) == 1 and labels else "none"
