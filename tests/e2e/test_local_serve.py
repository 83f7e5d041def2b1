"""`make serve` takes any parameter and prints requests that fit the model it serves: they work against it
as printed."""

from __future__ import annotations

import io
import json
import select
import subprocess
import time

from edgeservers.local_serve import tensor_request
from edgeservers.runtimes.tflite import TFLiteOptions, TFLiteRuntime
from tests.support.harness import MAKE, free_port, http_ok, stop_process_group
from tests.support.paths import MOBILENET_V2, ROOT, tflite_file


def _printed_commands(proc: subprocess.Popen, timeout: float = 60) -> list[str]:
    """The lines `make serve` prints under "In another shell:", read before the server takes over."""
    assert isinstance(proc.stdout, io.BufferedReader)
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
        assert "edgeservers_inference_seconds" in _run(prometheus.split("#")[0])

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
