"""A model that cannot load stops the process at start with one clear line."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from conftest import FACE_MASK, MOBILENET_V1, MOBILENET_V2, ROOT, ModelServer


def start_and_fail(server_class: str, **params) -> str:
    """Run the real microservice; it must exit non-zero by itself. Returns its last stderr line."""
    server = ModelServer(server_class, **params)
    proc = subprocess.run(server.command(), cwd=ROOT, env=server.env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0, proc.stderr[-2000:]
    ours = [line for line in proc.stderr.splitlines() if line.startswith(f"{server_class}: cannot load model:")]
    assert len(ours) == 1, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    return ours[0]


def test_missing_model_uri(tmp_path):
    line = start_and_fail("TFLiteServer", top_k=3)
    assert "model_uri is required" in line


def test_model_uri_that_does_not_exist(tmp_path):
    line = start_and_fail("TFLiteServer", model_uri=str(tmp_path / "nowhere"))
    assert "no such file or directory" in line and "nowhere" in line


def test_directory_without_a_model_names_the_directory_and_what_it_holds(tmp_path):
    (tmp_path / "README.md").write_text("no model here")
    line = start_and_fail("TFLiteServer", model_uri=str(tmp_path))
    assert str(tmp_path) in line and ".tflite" in line and "README.md" in line


def test_directory_with_two_models_is_ambiguous(tmp_path):
    shutil.copy(next(MOBILENET_V1.glob("*.tflite")), tmp_path / "a.tflite")
    shutil.copy(next(MOBILENET_V1.glob("*.tflite")), tmp_path / "b.tflite")
    line = start_and_fail("TFLiteServer", model_uri=str(tmp_path))
    assert "several .tflite models (a.tflite, b.tflite)" in line


def test_corrupt_model_file(tmp_path):
    (tmp_path / "broken.tflite").write_bytes(b"\x00" * 64)
    line = start_and_fail("TFLiteServer", model_uri=str(tmp_path))
    assert "cannot read" in line and "broken.tflite" in line


@pytest.mark.parametrize("server_class", ["TFLiteServer", "OpenVINOServer"])
def test_unknown_tensor_name_lists_the_model_names(server_class):
    line = start_and_fail(server_class, model_uri=str(FACE_MASK), output_tensor_name="scores")
    assert "unknown output tensor name(s) scores" in line
    assert "loc_branch_concat_1/concat" in line and "cls_branch_concat_1/concat" in line


def test_unknown_parameter_is_named():
    line = start_and_fail("TFLiteServer", model_uri=str(MOBILENET_V2), topk=3)
    assert "unknown parameter(s) topk" in line and "top_k" in line


def test_bad_parameter_value():
    line = start_and_fail("TFLiteServer", model_uri=str(MOBILENET_V2), postprocess="boxes")
    assert "postprocess='boxes'" in line and "classification" in line


def test_post_processing_that_does_not_fit_the_model():
    line = start_and_fail("TFLiteServer", model_uri=str(FACE_MASK), postprocess="classification")
    assert "needs one output" in line and "output_tensor_name" in line


def test_openvino_unknown_device():
    line = start_and_fail("OpenVINOServer", model_uri=str(MOBILENET_V2), device="NPU7")
    assert "'NPU7' is not available" in line and "CPU" in line


def test_openvino_corrupt_ir(tmp_path):
    (tmp_path / "model.xml").write_text("<net name='broken'><layers>")
    (tmp_path / "model.bin").write_bytes(b"\x00" * 16)
    line = start_and_fail("OpenVINOServer", model_uri=str(tmp_path))
    assert "OpenVINO cannot read" in line and "model.xml" in line



def test_ambiguous_output_layout_asks_for_output_layout(tmp_path):
    """A segmentation map [1,4,4,4] may be NHWC or NCHW: with output_layout=auto the server cannot tell."""
    import numpy as np
    import openvino as ov
    import openvino.opset13 as ops

    image = ops.parameter([1, 3, 4, 4], np.float32, name="image")
    scores = ops.concat([image, ops.reduce_max(image, [1], True)], axis=1)  # [1, 4, 4, 4]
    ov.save_model(ov.Model([scores], [image], "m"), str(tmp_path / "model.xml"))
    line = start_and_fail("OpenVINOServer", model_uri=str(tmp_path), postprocess="segmentation")
    assert "shape [1, 4, 4, 4], which may be NHWC or NCHW: set parameter output_layout to NHWC or NCHW" in line


@pytest.mark.parametrize(
    "server_class, precision, words",
    [
        ("OpenVINOServer", "fp8", "parameter inference_precision='fp8': expected one of f32, auto, bf16, f16"),
        ("TFLiteServer", "bf16", "parameter inference_precision='bf16': expected one of f32, auto for TFLiteServer"),
    ],
)
def test_unknown_inference_precision_names_the_allowed_values(server_class, precision, words):
    line = start_and_fail(server_class, model_uri=str(FACE_MASK), inference_precision=precision)
    assert words in line
