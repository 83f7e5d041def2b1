"""A newcomer's first commands: `make help` lists every target, `make serve` takes any parameter and prints
requests that fit the model it serves, and they work against it as printed."""

from __future__ import annotations

import json
import re
import select
import subprocess
import time

import pytest
from seldon_core.microservice import parse_parameters

from edgeservers.local_serve import main, requests_for, seldon_types, tensor_request, typed_parameters
from edgeservers.runtimes.tflite import TFLiteOptions, TFLiteRuntime
from edgeservers.settings import Settings

from conftest import DEEPLAB, FACE_MASK, MOBILENET_V2, ROOT, free_port, tflite_file
from harness import http_ok, stop_process_group

# The tests run in the venv `make test` has just installed: `-o install` keeps make from installing again.
MAKE = ["make", "-s", "--no-print-directory", "-o", "install"]


def test_make_help_lists_every_target_with_its_line():
    makefiles = [ROOT / "Makefile", *sorted((ROOT / "mk").glob("*.mk"))]
    phony = {t for f in makefiles for line in re.findall(r"^\.PHONY:(.*)$", f.read_text(), re.M) for t in line.split()}
    # "## name: what it does" (more "## " lines may follow), right above the rule "name:"
    rule = re.compile(r"^## ([a-z][a-z0-9-]*): .*\n(?:## .*\n)*\1:", re.M)
    documented = {name for f in makefiles for name in rule.findall(f.read_text())}
    assert phony == documented, "every target has a `## target: what it does` line above its rule"
    shown = subprocess.run([*MAKE, "help"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    listed = {line.split()[0]: line for line in shown.splitlines() if line[:3].strip()}
    assert set(listed) == phony
    assert all(len(line.split()) > 1 for line in listed.values()), shown


def test_parameters_are_typed_as_the_settings_fields():
    types = seldon_types()
    assert set(types) == {f for f in Settings.__dataclass_fields__}
    assert (types["top_k"], types["confidence_threshold"], types["return_mask"], types["model_uri"]) == (
        "INT",
        "FLOAT",
        "BOOL",
        "STRING",
    )
    parsed = parse_parameters(typed_parameters({"top_k": "3", "confidence_threshold": "0.8", "return_mask": "yes"}))
    assert parsed == {"top_k": 3, "confidence_threshold": 0.8, "return_mask": True}


def test_a_pair_without_a_value_is_refused_with_one_line(capsys):
    with pytest.raises(SystemExit) as stopped:
        main([str(MOBILENET_V2), "top_k"])
    assert stopped.value.code == 2
    assert capsys.readouterr().err == "make serve: PARAMS takes name=value pairs, got 'top_k'\n"


@pytest.mark.parametrize(
    "model, postprocess, photo",
    [(FACE_MASK, "detection", "face_mask_demo.jpg"), (DEEPLAB, "segmentation", "bird_segmentation.bmp")],
)
def test_the_photo_fits_the_model(model, postprocess, photo):
    (prediction, *_) = requests_for({"model_uri": str(model), "postprocess": postprocess}, "http://h:1", "http://h:2")
    assert prediction == f"curl -s -F binData=@images/{photo} http://h:1/api/v1.0/predictions"


def _printed_commands(proc: subprocess.Popen, timeout: float = 60) -> list[str]:
    """The lines `make serve` prints under "In another shell:", read before the server takes over."""
    assert proc.stdout is not None
    out, deadline = b"", time.monotonic() + timeout
    while b"Prometheus\n" not in out and time.monotonic() < deadline and proc.poll() is None:
        if select.select([proc.stdout], [], [], 1)[0]:
            out += proc.stdout.read1(1 << 16)
    text = out.decode()
    assert "In another shell:\n" in text, text
    return [line.strip() for line in text.split("In another shell:\n", 1)[1].splitlines() if line.strip()]


def _run(command: str) -> str:
    result = subprocess.run(command, shell=True, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_make_serve_takes_any_parameter_and_its_printed_requests_work(tmp_path):
    rest, grpc, metrics = free_port(), free_port(), free_port()
    params = "PARAMS=top_k=3 confidence_threshold=0.8"
    ports = [f"REST_PORT={rest}", f"GRPC_PORT={grpc}", f"METRICS_PORT={metrics}"]
    proc = subprocess.Popen(
        [*MAKE, "serve", params, *ports],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        prediction, metadata, prometheus = _printed_commands(proc)
        deadline = time.monotonic() + 120
        while not http_ok(f"http://127.0.0.1:{rest}/health/ping") and time.monotonic() < deadline:
            assert proc.poll() is None, "make serve exited before its server answered"
            time.sleep(0.2)

        answer = json.loads(_run(prediction))
        assert [a["label"] for a in answer["jsonData"]] == [
            "macaw",
            "tench, Tinca tinca",
            "goldfish, Carassius auratus",
        ]
        assert answer["meta"]["tags"]["uncertain"] is False  # confidence_threshold=0.8 reached the server
        assert json.loads(_run(metadata.split("#")[0]))["name"] == "mobilenet_v2_1.0_224_quant"
        assert "edgeservers_inference_ms" in _run(prometheus.split("#")[0])

        # What a tensor-only model gets: a tensor of the input's shape and dtype, in a file curl sends.
        inputs, _ = TFLiteRuntime.inspect(tflite_file(MOBILENET_V2), TFLiteOptions(num_threads=1, pool_size=1))
        body = tensor_request(inputs, tmp_path / "tensor.json")
        tensor = json.loads(
            _run(f"curl -s -H 'Content-Type: application/json' -d @{body} http://127.0.0.1:{rest}/api/v1.0/predictions")
        )
        assert len(tensor["data"]["ndarray"][0]) == 1001, tensor
    finally:
        stop_process_group(proc, timeout=30)
        for stream in (proc.stdout, proc.stderr):
            if stream:
                stream.close()
