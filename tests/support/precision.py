"""What a bf16 or f16 device computes, on any CPU: a model with every f32 tensor rounded to that precision
(the tests check the `auto` tolerance against it; bench/precision.py measures its accuracy)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import openvino as ov
import openvino.opset13 as ops
import pytest

from tests.support.paths import IMAGES, tflite_file

# The photos the classifier's answers are compared on.
CLASSIFIER_PHOTOS = ["parrot.jpg", "cat.bmp", "grace_hopper.bmp", "bird.bmp"]
# What `auto` (bf16 on CPUs with AMX / avx512_bf16, f16 on ARM CPUs with fp16 arithmetic) promises against
# f32: the same top-1 label and detected labels, scores within AUTO_SCORE and boxes within AUTO_BOX of the
# image's larger side, about twice the largest differences measured (docs/benchmarks.md, Precision).
AUTO_SCORE = 0.08
AUTO_BOX = 0.03


def rounded(model: ov.Model, precision: str) -> ov.Model:
    """The model with every f32 tensor (weights and activations) rounded to `precision` and back: what
    a bf16 or f16 device computes, up to its f32 accumulation inside each operation, on any CPU.
    FakeQuantize ranges stay constants: they carry a quantized model's scales."""
    for node in list(model.get_ordered_ops()):
        if node.get_type_name() == "Result":
            continue
        for output in node.outputs():
            targets = [
                t
                for t in output.get_target_inputs()
                if not (t.get_node().get_type_name() == "FakeQuantize" and t.get_index() > 0)
            ]
            if output.get_element_type() == ov.Type.f32 and targets:
                converted = ops.convert(ops.convert(output, precision), "f32")
                for target in targets:
                    target.replace_source_output(converted.output(0))
    return model


def rounded_model_dir(model_dir: Path, precision: str, target: Path) -> Path:
    """An IR of the bundled .tflite rounded to `precision`, with its labels."""
    ov.save_model(
        rounded(ov.Core().read_model(str(tflite_file(model_dir))), precision),
        str(target / "model.xml"),
        compress_to_fp16=False,
    )
    shutil.copy(model_dir / "labels.txt", target / "labels.txt")
    return target


def assert_within_auto_tolerance(classifier: Any, detector: Any, mobilenet: Any, face_mask: Any) -> None:
    """`classifier` and `detector` answer as `mobilenet` and `face_mask` (f32) do, within the `auto` tolerance."""
    for image in CLASSIFIER_PHOTOS:
        reference, answer = mobilenet.image(image)["jsonData"], classifier.image(image)["jsonData"]
        assert answer[0]["label"] == reference[0]["label"]
        assert answer[0]["score"] == pytest.approx(reference[0]["score"], abs=AUTO_SCORE)
    for image in ("face_mask_demo.jpg", "grace_hopper.bmp"):
        reference, answer = face_mask.image(image)["jsonData"], detector.image(image)["jsonData"]
        assert [d["label"] for d in answer] == [d["label"] for d in reference]
        side = max(cv2.imread(str(IMAGES / image)).shape[:2])
        for got, want in zip(answer, reference):
            assert got["score"] == pytest.approx(want["score"], abs=AUTO_SCORE)
            assert np.abs(np.subtract(got["box"], want["box"])).max() <= AUTO_BOX * side
