"""Finding the model file in a model directory (edgeservers/core/modelfiles.py)."""

from __future__ import annotations

import pytest

from edgeservers.core.modelfiles import find_model, read_labels
from edgeservers.errors import ModelLoadError


def test_openvino_prefers_the_ir_and_needs_its_weights(tmp_path):
    (tmp_path / "model.tflite").write_bytes(b"x")
    (tmp_path / "model.xml").write_text("<net/>")
    with pytest.raises(ModelLoadError, match="no weights file model.bin"):
        find_model(tmp_path, (".xml", ".onnx", ".tflite"))
    (tmp_path / "model.bin").write_bytes(b"x")
    assert find_model(tmp_path, (".xml", ".onnx", ".tflite")).name == "model.xml"
    assert find_model(tmp_path, (".tflite",)).name == "model.tflite"


def test_labels_from_a_file_beside_the_model_or_given_as_names(tmp_path):
    model = tmp_path / "m.tflite"
    assert read_labels(model, "") is None
    (tmp_path / "labels.txt").write_text("cat\ndog\n")
    assert read_labels(model, "") == ["cat", "dog"]
    assert read_labels(model, "", "Mask, NoMask") == ["Mask", "NoMask"]  # a model fetched without its labels file
