"""A model that cannot load stops the process at start with one clear line.

Each check runs in-process: the server class built as the wrapper builds it must exit (SystemExit)
having written exactly that one line to stderr. Two run the real microservice (one per server class)
to show the whole wrapper stops with the one line and no traceback; a third finds its gRPC port taken.
"""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from conftest import FACE_MASK, MOBILENET_V1, MOBILENET_V2, ROOT, ModelServer, our_line, parameters
from harness import listening_on


def _run_to_exit(server: ModelServer) -> str:
    """Run the real microservice; it must exit non-zero by itself. Returns its stderr."""
    proc = subprocess.run(server.command(), cwd=ROOT, env=server.env, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0, proc.stderr[-2000:]
    return proc.stderr


def start_and_fail(server_class: str, **params) -> str:
    """Run the real microservice; it must exit non-zero by itself. Returns its one line."""
    return our_line(server_class, _run_to_exit(ModelServer(server_class, **params)))


def test_missing_model_uri_stops_the_whole_wrapper():
    line = start_and_fail("TFLiteServer", top_k=3)
    assert "model_uri is required" in line


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


def _corrupt_ir(directory):
    (directory / "model.xml").write_text("<net name='broken'><layers>")
    (directory / "model.bin").write_bytes(b"\x00" * 16)


def test_openvino_corrupt_ir(fail, tmp_path):
    _corrupt_ir(tmp_path)
    line = fail("OpenVINOServer", model_uri=str(tmp_path))
    assert "OpenVINO cannot read" in line and "model.xml" in line
    assert (
        "Unable to read the model" in line and "Exception from src/" not in line
    )  # OpenVINO's words, not its source lines


def test_openvino_corrupt_ir_stops_the_whole_wrapper(tmp_path):
    _corrupt_ir(tmp_path)
    line = start_and_fail("OpenVINOServer", model_uri=str(tmp_path))
    assert "OpenVINO cannot read" in line and "model.xml" in line


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


def test_a_taken_grpc_port_stops_the_server_with_one_line():
    """Another process on the gRPC port (a second server, a stale pod on hostNetwork): one line, no traceback."""
    server = ModelServer("TFLiteServer", model_uri=str(MOBILENET_V2))
    with listening_on(server.grpc_port):
        stderr = _run_to_exit(server)
    assert "Traceback" not in stderr, stderr[-3000:]
    assert stderr.splitlines()[-1] == (
        f"TFLiteServer: cannot listen for gRPC on port {server.grpc_port}: Address already in use "
        "(set by --grpc-port; the operator passes PREDICTIVE_UNIT_GRPC_SERVICE_PORT)"
    ), stderr[-2000:]


# --- the parameter list itself: checked before Seldon's parser reads it (edgeservers/parameter_check.py) ---


def _seldon_stops(server: ModelServer) -> str:
    """The real microservice stops at its parameter list: its last stderr line, with no traceback."""
    stderr = _run_to_exit(server)
    assert "Traceback" not in stderr, stderr[-3000:]
    return stderr.splitlines()[-1]


def test_an_int_helm_wrote_as_a_float_is_named_from_the_environment():
    """What an old chart rendered from `max_request_bytes: 8388608`: Seldon's int() refuses it."""
    server = ModelServer("TFLiteServer", model_uri=str(MOBILENET_V2))
    server.env["PREDICTIVE_UNIT_PARAMETERS"] = json.dumps(
        [
            {"name": "model_uri", "value": str(MOBILENET_V2), "type": "STRING"},
            {"name": "max_request_bytes", "value": "8.388608e+06", "type": "INT"},
        ]
    )
    assert _seldon_stops(server) == (
        "TFLiteServer: parameter max_request_bytes: '8.388608e+06' is not an INT (write it in digits: 8388608)"
    )


def test_malformed_json_in_the_parameters_option_is_named():
    server = ModelServer("OpenVINOServer", model_uri=str(MOBILENET_V2))
    server.argv += ["--parameters", '[{"name": "top_k", "value": "3", "type": "INT"']
    line = _seldon_stops(server)
    assert line.startswith("OpenVINOServer: --parameters is not valid JSON (Expecting"), line


def test_an_unknown_type_name_is_named():
    server = ModelServer("TFLiteServer", model_uri=str(MOBILENET_V2))
    server.env["PREDICTIVE_UNIT_PARAMETERS"] = json.dumps([{"name": "top_k", "value": "3", "type": "INTEGER"}])
    assert _seldon_stops(server) == (
        "TFLiteServer: parameter top_k: type 'INTEGER' is not one of INT, FLOAT, DOUBLE, STRING, BOOL"
    )


# (parameter list as the operator or a user writes it, the one line after "TFLiteServer: ")
PARAMETER_LIST_CASES = {
    "INT with a fraction": (
        '[{"name": "top_k", "value": "3.5", "type": "INT"}]',
        "parameter top_k: '3.5' is not an INT (a whole number in digits)",
    ),
    "INT that is a word": (
        '[{"name": "top_k", "value": "five", "type": "INT"}]',
        "parameter top_k: 'five' is not an INT (a whole number in digits)",
    ),
    "INT written 3.0": (
        '[{"name": "top_k", "value": "3.0", "type": "INT"}]',
        "parameter top_k: '3.0' is not an INT (write it in digits: 3)",
    ),
    "FLOAT that is a word": (
        '[{"name": "confidence_threshold", "value": "high", "type": "FLOAT"}]',
        "parameter confidence_threshold: 'high' is not a FLOAT",
    ),
    "DOUBLE that is empty": (
        '[{"name": "score_threshold", "value": "", "type": "DOUBLE"}]',
        "parameter score_threshold: '' is not a DOUBLE",
    ),
    "BOOL that is a word": (
        '[{"name": "return_mask", "value": "maybe", "type": "BOOL"}]',
        "parameter return_mask: 'maybe' is not a BOOL (true or false, yes or no, on or off, 1 or 0)",
    ),
    "BOOL as a JSON boolean": (
        '[{"name": "return_mask", "value": true, "type": "BOOL"}]',
        "parameter return_mask: True is not a BOOL (true or false, yes or no, on or off, 1 or 0)",
    ),
    "INT as JSON null": (
        '[{"name": "top_k", "value": null, "type": "INT"}]',
        "parameter top_k: None is not an INT (a whole number in digits)",
    ),
    "no value": ('[{"name": "top_k", "type": "INT"}]', "parameter top_k: no value"),
    "no type": (
        '[{"name": "top_k", "value": "3"}]',
        "parameter top_k: type None is not one of INT, FLOAT, DOUBLE, STRING, BOOL",
    ),
    "lowercase type": (
        '[{"name": "top_k", "value": "3", "type": "int"}]',
        "parameter top_k: type 'int' is not one of INT, FLOAT, DOUBLE, STRING, BOOL",
    ),
    "no name": (
        '[{"value": "3", "type": "INT"}]',
        'PREDICTIVE_UNIT_PARAMETERS: entry 1 has no name: \'{"value": "3", "type": "INT"}\'',
    ),
    "an object, not a list": (
        '{"top_k": 3}',
        'PREDICTIVE_UNIT_PARAMETERS must be a JSON list of {"name", "type", "value"} objects, got \'{"top_k": 3}\'',
    ),
    "a list of names": (
        '["top_k"]',
        'PREDICTIVE_UNIT_PARAMETERS must be a JSON list of {"name", "type", "value"} objects, got \'["top_k"]\'',
    ),
    "not JSON": (
        "top_k=3",
        "PREDICTIVE_UNIT_PARAMETERS is not valid JSON (Expecting value: line 1 column 1 (char 0)): 'top_k=3'",
    ),
}


@pytest.mark.parametrize("case", sorted(PARAMETER_LIST_CASES))
def test_a_parameter_list_seldon_cannot_parse_is_named(monkeypatch, case):
    """Seldon's own parse_args and parse_parameters, wrapped as the .pth wraps them in the real process."""
    from seldon_core import microservice

    from edgeservers.parameter_check import checked

    text, line = PARAMETER_LIST_CASES[case]
    monkeypatch.setenv("PREDICTIVE_UNIT_PARAMETERS", text)
    monkeypatch.setattr("sys.argv", ["seldon-core-microservice", "TFLiteServer", "--service-type", "MODEL"])
    with pytest.raises(SystemExit) as stopped:
        checked(microservice.parse_args, microservice.parse_parameters)()
    assert stopped.value.code == f"TFLiteServer: {line}"


def test_a_good_parameter_list_passes_unchanged(monkeypatch):
    from seldon_core import microservice

    from edgeservers.parameter_check import checked

    good = parameters({"model_uri": "/mnt/models", "top_k": 3, "confidence_threshold": 0.5, "return_mask": True})
    monkeypatch.setenv("PREDICTIVE_UNIT_PARAMETERS", good)
    monkeypatch.setattr("sys.argv", ["seldon-core-microservice", "edgeservers_x.TFLiteServer"])
    options, remaining = checked(microservice.parse_args, microservice.parse_parameters)()
    assert options.parameters == good and remaining == []
