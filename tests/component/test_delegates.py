"""TFLite external delegates, with a real one built here from tests/support/delegate/tiny_delegate.c (no accelerator
needed; its `mode` option picks what it does): the server runs the model through it and says so in metadata
and a gauge, its options reach it as given, answers stay the CPU's; a delegate that cannot run the model
stops the start with one line, or with delegate_fallback=cpu leaves the model to the CPU after one warning;
a model compiled for the Edge TPU is refused without its delegate; an Edge TPU pool is one slot per device.

In-process (the server class built as the wrapper builds it, behind Seldon's own app), where the delegate's
trial at start is a real process all the same; tests/e2e/test_startup_errors.py shows the whole wrapper stop
with the line, tests/unit/test_delegates.py reads the delegate parameters.
"""

from __future__ import annotations

import json
import logging
import re
import shutil

import numpy as np
import pytest

from tests.support.ground_truth import plain_image_tensor, plain_outputs
from tests.support.paths import EDGETPU_MODEL, MOBILENET_V1, ROOT

DOC = ROOT / "docs" / "accelerators.md"
MODEL_NODES = 31  # mobilenet_v1_0.25_128_quant: 15 CONV_2D, 13 DEPTHWISE_CONV_2D, AVERAGE_POOL_2D, RESHAPE, SOFTMAX
FALLBACK_NOTE = "(parameter delegate_fallback=cpu would run the model on the CPU instead)"


def _delegated(library, **params) -> dict:
    return {"model_uri": str(MOBILENET_V1), "delegate": str(library), **params}


def _answers_as_the_cpu(server) -> None:
    """Raw outputs bit-identical to the plain interpreter's (TFLite alone, on the CPU)."""
    tensor = plain_image_tensor(MOBILENET_V1, "parrot.jpg")
    (expected,) = plain_outputs(MOBILENET_V1, tensor).values()
    reply = server.rest_ok({"data": {"ndarray": tensor.tolist()}})
    np.testing.assert_array_equal(np.asarray(reply["data"]["ndarray"], dtype=expected.dtype), expected)


def _delegate_gauge(server) -> list[str]:
    return [line for line in server.prometheus().splitlines() if line.startswith("edgeservers_delegate_info{")]


# --- a delegate that works --------------------------------------------------------------------------------


def test_a_delegate_runs_the_nodes_it_takes_its_options_arrive_and_answers_are_the_cpus(
    load_server, tiny_delegate, tmp_path
):
    options_file = tmp_path / "received.txt"
    options = f"mode=reshape;backends=CpuAcc,CpuRef;api_token=s3cret;options_file={options_file}"
    server = load_server(
        "TFLiteServer", own_metrics=True, **_delegated(tiny_delegate.library, delegate_options=options, pool_size=2)
    )

    custom = server.get("/api/v1.0/metadata").json()["custom"]
    assert custom["delegate"] == str(tiny_delegate.library)
    assert custom["delegate_applied"] == "yes"
    assert custom["delegate_nodes"] == f"1 of {MODEL_NODES}"  # the model's one RESHAPE
    assert custom["delegate_fallback"] == "fail"
    assert custom["delegate_options"] == options.replace("s3cret", "***")  # shown masked, handed over whole
    # One instance in the trial at start, then one per pool slot, each with the options as given.
    received = options_file.read_text().strip().split("\n\n")
    assert received == ["\n".join(options.split(";"))] * 3

    _answers_as_the_cpu(server)
    (gauge,) = _delegate_gauge(server)
    assert f'delegate="{tiny_delegate.library}"' in gauge and 'applied="true"' in gauge and gauge.endswith(" 1.0")


def test_options_as_a_json_object(load_server, tiny_delegate, tmp_path):
    options_file = tmp_path / "received.txt"
    options = {"mode": "none", "number-of-threads": 4, "enable-fast-math": True, "options_file": str(options_file)}
    server = load_server(
        "TFLiteServer", **_delegated(tiny_delegate.library, delegate_options=json.dumps(options), pool_size=1)
    )
    custom = server.get("/api/v1.0/metadata").json()["custom"]
    assert custom["delegate_applied"] == "yes"
    assert custom["delegate_nodes"] == f"0 of {MODEL_NODES}"  # it took nothing: TFLite runs it all
    assert options_file.read_text().split("\n\n")[0].splitlines() == [
        "mode=none",
        "number-of-threads=4",
        "enable-fast-math=true",
        f"options_file={options_file}",
    ]
    _answers_as_the_cpu(server)


def test_an_edge_tpu_pool_is_one_slot_per_device_each_with_its_own(load_server, tiny_delegate, tmp_path):
    """libedgetpu takes one device per delegate instance and a device runs one interpreter at a time: the
    tiny delegate, under libedgetpu's name, gets one slot per device listed and its device alone."""
    library = tmp_path / "libedgetpu.so.1"
    shutil.copy(tiny_delegate.library, library)
    options_file = tmp_path / "received.txt"
    server = load_server(
        "TFLiteServer",
        **_delegated(library, delegate_options=f"device=usb:0,usb:1;options_file={options_file}", pool_size=4),
    )
    custom = server.get("/api/v1.0/metadata").json()["custom"]
    assert custom["delegate_pool"] == "pool_size 4 capped to 2: one interpreter per Edge TPU device (usb:0, usb:1)"
    assert custom["pool_size"] == "4" and len(custom["slot_threads"].split(",")) == 2
    devices = [block.splitlines()[0] for block in options_file.read_text().strip().split("\n\n")]
    assert devices == ["device=usb:0", "device=usb:1"] * 2  # the trial tries each device, then one slot each


# --- a delegate that cannot run the model -------------------------------------------------------------------


# Each way a delegate fails: its parameters (given the built libraries) and words of the one line.
CASES = {
    "library missing": (
        lambda d: {"delegate": "/nowhere/libmissing.so"},
        ["parameter delegate=/nowhere/libmissing.so: cannot load the library", "No such file"],
    ),
    "file name not on the library path": (
        lambda d: {"delegate": "libmissing_delegate.so.1"},
        ["cannot load the library", "looked up on the library path: LD_LIBRARY_PATH"],
    ),
    "library without the delegate interface": (
        lambda d: {"delegate": str(d.not_a_delegate)},
        ["not a TFLite external delegate", "does not export tflite_plugin_create_delegate"],
    ),
    "delegate not created (no device)": (
        lambda d: {"delegate": str(d.library), "delegate_options": "mode=refuse"},
        ["could not be created with options mode=refuse", "no device (mode=refuse)"],
    ),
    "Prepare fails": (
        lambda d: {"delegate": str(d.library), "delegate_options": "mode=fail_prepare"},
        ["cannot take mobilenet_v1_0.25_128_quant.tflite", "Prepare fails as asked"],
    ),
    "fails at its first inference": (
        lambda d: {"delegate": str(d.library), "delegate_options": "mode=fail_invoke"},
        ["failed in its first inference on mobilenet_v1_0.25_128_quant.tflite", "the kernel fails as asked"],
    ),
    "crashes": (
        lambda d: {"delegate": str(d.library), "delegate_options": "mode=crash"},
        ["crashed its trial on mobilenet_v1_0.25_128_quant.tflite: the process was killed by SIGSEGV"],
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_delegate_that_cannot_run_the_model_stops_the_start_with_one_line(fail, tiny_delegate, case):
    params, words = CASES[case]
    line = fail("TFLiteServer", model_uri=str(MOBILENET_V1), **params(tiny_delegate))
    for word in [*words, FALLBACK_NOTE]:
        assert word in line, line


@pytest.mark.parametrize("case", sorted(CASES))
def test_with_fallback_cpu_it_warns_once_and_the_cpu_answers(load_server, tiny_delegate, caplog, case):
    params, words = CASES[case]
    with caplog.at_level(logging.WARNING):
        server = load_server(
            "TFLiteServer",
            own_metrics=True,
            model_uri=str(MOBILENET_V1),
            delegate_fallback="cpu",
            **params(tiny_delegate),
        )
    (warning,) = [
        r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING and r.name.startswith("edgeservers")
    ]
    assert "\n" not in warning and warning.endswith("running the model on the CPU instead (delegate_fallback=cpu)")
    for word in words:
        assert word in warning, warning
    custom = server.get("/api/v1.0/metadata").json()["custom"]
    assert custom["delegate_applied"].startswith("no, the CPU runs the model (delegate_fallback=cpu): ")
    assert "delegate_nodes" not in custom
    _answers_as_the_cpu(server)
    (gauge,) = _delegate_gauge(server)
    assert 'applied="false"' in gauge


# --- a model compiled for the Edge TPU ----------------------------------------------------------------------


def test_an_edge_tpu_model_without_its_delegate_is_refused_naming_what_to_set(fail):
    line = fail("TFLiteServer", model_uri=str(EDGETPU_MODEL))
    assert line == (
        "TFLiteServer: cannot load model: mobilenet_v1_0.25_128_quant_edgetpu.tflite is compiled for the Coral "
        "Edge TPU: its custom op edgetpu-custom-op runs only on libedgetpu's delegate; set parameter "
        "delegate=libedgetpu.so.1, with libedgetpu in the image or mounted from the host (docs/accelerators.md)"
    )


@pytest.mark.parametrize("fallback", ["fail", "cpu"])
def test_an_edge_tpu_model_whose_delegate_leaves_its_op_has_nowhere_to_run(fail, tiny_delegate, fallback):
    """A delegate that does not take edgetpu-custom-op: the CPU cannot run it either, so even with
    delegate_fallback=cpu the server stops."""
    line = fail(
        "TFLiteServer", model_uri=str(EDGETPU_MODEL), delegate=str(tiny_delegate.library), delegate_fallback=fallback
    )
    assert "did not take custom op edgetpu-custom-op of mobilenet_v1_0.25_128_quant_edgetpu.tflite" in line
    assert (
        "nor can the CPU run mobilenet_v1_0.25_128_quant_edgetpu.tflite: it needs custom op edgetpu-custom-op" in line
    )


# --- parameters ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "params, words",
    [
        ({"delegate_options": "device=usb:0"}, "parameter delegate_options needs parameter delegate"),
        ({"delegate": "libx.so", "delegate_options": "device"}, "'device' is not key=value"),
        ({"delegate": "libx.so", "delegate_options": "{device: usb}"}, "parameter delegate_options: not JSON"),
        ({"delegate": "libx.so", "delegate_options": '{"device": ["usb:0"]}'}, "expected a JSON object of strings"),
        (
            {"delegate": "libx.so", "delegate_fallback": "gpu"},
            "parameter delegate_fallback='gpu': expected one of fail, cpu",
        ),
    ],
)
def test_bad_delegate_parameters_are_named(fail, params, words):
    line = fail("TFLiteServer", model_uri=str(MOBILENET_V1), **params)
    assert words in line, line


# --- docs/accelerators.md says what the server says ----------------------------------------------------------


def _doc_blocks(kind: str) -> list[str]:
    return [block.strip() for block in re.findall(rf"```{kind}\n(.*?)```", DOC.read_text(), re.S)]


def test_the_lines_in_the_doc_are_the_servers(fail):
    edgetpu = fail("TFLiteServer", model_uri=str(EDGETPU_MODEL))
    missing = fail("TFLiteServer", model_uri=str(MOBILENET_V1), delegate="libedgetpu.so.1")
    assert [" ".join(block.split()) for block in _doc_blocks("text")] == [edgetpu, missing]


def test_the_metadata_in_the_doc_is_the_servers(load_server, tiny_delegate, tmp_path):
    library = tmp_path / "libedgetpu.so.1"
    shutil.copy(tiny_delegate.library, library)
    options = "device=usb:0,usb:1;mode=reshape;api_token=s3cret"
    server = load_server("TFLiteServer", **_delegated(library, delegate_options=options, pool_size=4))
    custom = server.get("/api/v1.0/metadata").json()["custom"]
    (documented,) = (json.loads(block) for block in _doc_blocks("json"))
    assert documented.pop("delegate") == "/opt/edgeservers/delegate/libedgetpu.so.1"  # the chart's mount
    assert custom.pop("delegate") == str(library)
    assert {k: v for k, v in custom.items() if k in documented} == documented
