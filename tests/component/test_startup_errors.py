"""A model that cannot load stops the process at start with one clear line.

Each check runs in-process: the server class built as the wrapper builds it must exit (SystemExit)
having written exactly that one line to stderr (tests/e2e/test_startup_errors.py shows the whole wrapper
stop the same way).
"""

from __future__ import annotations

import shutil

import pytest

from tests.support.clients import corrupt_ir
from tests.support.paths import FACE_MASK, MOBILENET_V1, MOBILENET_V2


def test_missing_model_uri(fail):
    line = fail("TFLiteServer", top_k=3)
    assert "model_uri is required" in line


def test_model_uri_that_does_not_exist(fail, tmp_path):
    line = fail("TFLiteServer", model_uri=str(tmp_path / "nowhere"))
    assert "no such file or directory" in line and "nowhere" in line


def test_directory_without_a_model_names_the_directory_and_what_it_holds(fail, tmp_path):
    (tmp_path / "README.md").write_text("no model here")
    line = fail("TFLiteServer", model_uri=str(tmp_path))
    assert str(tmp_path) in line and ".tflite" in line and "README.md" in line


def test_directory_with_two_models_is_ambiguous(fail, tmp_path):
    shutil.copy(next(MOBILENET_V1.glob("*.tflite")), tmp_path / "a.tflite")
    shutil.copy(next(MOBILENET_V1.glob("*.tflite")), tmp_path / "b.tflite")
    line = fail("TFLiteServer", model_uri=str(tmp_path))
    assert "several .tflite models (a.tflite, b.tflite)" in line


def test_corrupt_model_file(fail, tmp_path):
    (tmp_path / "broken.tflite").write_bytes(b"\x00" * 64)
    line = fail("TFLiteServer", model_uri=str(tmp_path))
    assert "cannot read" in line and "broken.tflite" in line


# (server class, parameters, words the line must contain): errors found in the parameters or the model's signature.
SIGNATURE_CASES = {
    "unknown tensor name lists the model's names (TFLite)": (
        "TFLiteServer",
        {"model_uri": str(FACE_MASK), "output_tensor_name": "scores"},
        ["unknown output tensor name(s) scores", "loc_branch_concat_1/concat", "cls_branch_concat_1/concat"],
    ),
    "unknown tensor name lists the model's names (OpenVINO)": (
        "OpenVINOServer",
        {"model_uri": str(FACE_MASK), "output_tensor_name": "scores"},
        ["unknown output tensor name(s) scores", "loc_branch_concat_1/concat", "cls_branch_concat_1/concat"],
    ),
    "unknown parameter is named": (
        "TFLiteServer",
        {"model_uri": str(MOBILENET_V2), "topk": 3},
        ["unknown parameter(s) topk", "top_k"],
    ),
    "bad parameter value": (
        "TFLiteServer",
        {"model_uri": str(MOBILENET_V2), "postprocess": "boxes"},
        ["postprocess='boxes'", "classification"],
    ),
    "post-processing that does not fit the model": (
        "TFLiteServer",
        {"model_uri": str(FACE_MASK), "postprocess": "classification"},
        ["needs one output", "output_tensor_name"],
    ),
    "bind_address that is not an address": (
        "TFLiteServer",
        {"model_uri": str(MOBILENET_V2), "bind_address": "everywhere"},
        ["parameter bind_address='everywhere': expected an IP address"],
    ),
    "OpenVINO unknown device": (
        "OpenVINOServer",
        {"model_uri": str(MOBILENET_V2), "device": "NPU7"},
        ["'NPU7' is not available", "CPU"],
    ),
    "OpenVINO device number the node lacks": (
        "OpenVINOServer",
        {"model_uri": str(MOBILENET_V2), "device": "CPU.7"},
        ["parameter device: OpenVINO device 'CPU.7' is not available here; available: CPU"],
    ),
    "OpenVINO AUTO with a candidate the node lacks": (
        "OpenVINOServer",
        {"model_uri": str(MOBILENET_V2), "device": "AUTO:NPU7,CPU"},
        ["OpenVINO device 'AUTO:NPU7,CPU' names NPU7, which is not available here; available: CPU"],
    ),
    "OpenVINO HETERO with devices the node lacks": (
        "OpenVINOServer",
        {"model_uri": str(MOBILENET_V2), "device": "HETERO:NPU7,GPU7,CPU"},
        ["names NPU7, GPU7, which are not available here; available: CPU"],
    ),
    "OpenVINO BATCH on a device the node lacks": (
        "OpenVINOServer",
        {"model_uri": str(MOBILENET_V2), "device": "BATCH:NPU7(4)"},
        ["names NPU7, which is not available here"],
    ),
}


@pytest.mark.parametrize("case", sorted(SIGNATURE_CASES))
def test_bad_parameters_and_signatures_are_named(fail, case):
    server_class, params, words = SIGNATURE_CASES[case]
    line = fail(server_class, **params)
    for word in words:
        assert word in line, line


def test_openvino_corrupt_ir(fail, tmp_path):
    corrupt_ir(tmp_path)
    line = fail("OpenVINOServer", model_uri=str(tmp_path))
    assert "OpenVINO cannot read" in line and "model.xml" in line
    assert (
        "Unable to read the model" in line and "Exception from src/" not in line
    )  # OpenVINO's words, not its source lines


def test_ambiguous_output_layout_asks_for_output_layout(fail, tmp_path):
    """A segmentation map [1,4,4,4] may be NHWC or NCHW: with output_layout=auto the server cannot tell."""
    import numpy as np
    import openvino as ov
    import openvino.opset13 as ops

    image = ops.parameter([1, 3, 4, 4], np.float32, name="image")
    scores = ops.concat([image, ops.reduce_max(image, [1], True)], axis=1)  # [1, 4, 4, 4]
    ov.save_model(ov.Model([scores], [image], "m"), str(tmp_path / "model.xml"))
    line = fail("OpenVINOServer", model_uri=str(tmp_path), postprocess="segmentation")
    assert "shape [1, 4, 4, 4], which may be NHWC or NCHW: set parameter output_layout to NHWC or NCHW" in line


@pytest.mark.parametrize(
    "server_class, precision, words",
    [
        ("OpenVINOServer", "fp8", "parameter inference_precision='fp8': expected one of f32, auto, bf16, f16"),
        ("TFLiteServer", "bf16", "parameter inference_precision='bf16': expected one of f32, auto for TFLiteServer"),
    ],
)
def test_unknown_inference_precision_names_the_allowed_values(fail, server_class, precision, words):
    line = fail(server_class, model_uri=str(FACE_MASK), inference_precision=precision)
    assert words in line
