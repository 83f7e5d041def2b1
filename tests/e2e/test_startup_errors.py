"""A model or a parameter list that cannot load stops the whole wrapper (the real `seldon-core-microservice`)
at start with one line and no traceback, for each server class; so does a gRPC port another process holds."""

from __future__ import annotations

import json

from tests.support.clients import ModelServer, corrupt_ir, run_to_exit, start_and_fail
from tests.support.harness import listening_on
from tests.support.paths import MOBILENET_V1, MOBILENET_V2


def test_missing_model_uri_stops_the_whole_wrapper():
    line = start_and_fail("TFLiteServer", top_k=3)
    assert "model_uri is required" in line


def test_openvino_corrupt_ir_stops_the_whole_wrapper(tmp_path):
    corrupt_ir(tmp_path)
    line = start_and_fail("OpenVINOServer", model_uri=str(tmp_path))
    assert "OpenVINO cannot read" in line and "model.xml" in line


def test_a_taken_grpc_port_stops_the_server_with_one_line():
    """Another process on the gRPC port (a second server, a stale pod on hostNetwork): one line, no traceback."""
    server = ModelServer("TFLiteServer", model_uri=str(MOBILENET_V2))
    with listening_on(server.grpc_port):
        stderr = run_to_exit(server)
    assert "Traceback" not in stderr, stderr[-3000:]
    assert stderr.splitlines()[-1] == (
        f"TFLiteServer: cannot listen for gRPC on port {server.grpc_port}: Address already in use "
        "(set by --grpc-port; the operator passes PREDICTIVE_UNIT_GRPC_SERVICE_PORT)"
    ), stderr[-2000:]


def _seldon_stops(server: ModelServer) -> str:
    """The real microservice stops at its parameter list: its last stderr line, with no traceback."""
    stderr = run_to_exit(server)
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


def test_a_delegate_that_cannot_run_the_model_stops_the_whole_wrapper_with_the_one_line(tiny_delegate):
    line = start_and_fail(
        "TFLiteServer",
        model_uri=str(MOBILENET_V1),
        delegate=str(tiny_delegate.library),
        delegate_options="mode=fail_prepare",
        pool_size=1,
    )
    assert "Prepare fails as asked (mode=fail_prepare)" in line
    assert "(parameter delegate_fallback=cpu would run the model on the CPU instead)" in line
