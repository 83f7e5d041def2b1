"""OpenVINOServer with an explicit low inference_precision: it runs only where the CPU computes in it (then within
the `auto` tolerance of TFLite's answers); elsewhere the whole wrapper refuses it at start with one line."""

from __future__ import annotations

import openvino as ov
import pytest

from tests.support.clients import start_and_fail
from tests.support.paths import FACE_MASK, MOBILENET_V2
from tests.support.precision import assert_within_auto_tolerance


@pytest.mark.parametrize("precision, capability", [("bf16", "BF16"), ("f16", "FP16")])
def test_explicit_low_precision_runs_only_where_the_cpu_computes_in_it(
    mobilenet_in_process, face_mask_in_process, load_server, precision, capability
):
    """OpenVINO would silently run f32 where the CPU lacks bf16 / f16: the server refuses instead."""
    if capability in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
        classifier = load_server("OpenVINOServer", model_uri=str(MOBILENET_V2), inference_precision=precision)
        detector = load_server(
            "OpenVINOServer", model_uri=str(FACE_MASK), postprocess="detection", inference_precision=precision
        )
        assert classifier.get("/api/v1.0/metadata").json()["custom"]["inference_precision"] == precision
        assert_within_auto_tolerance(classifier, detector, mobilenet_in_process, face_mask_in_process)
    else:
        line = start_and_fail("OpenVINOServer", model_uri=str(MOBILENET_V2), inference_precision=precision)
        assert f"parameter inference_precision='{precision}': OpenVINO device CPU cannot compute in {precision}" in line
        assert "use f32 or auto" in line
