"""Memory is correctness on a 1 GB edge node: the whole TFLite server tree stays within its limit.

tests/support/memory.py starts the real `seldon-core-microservice` with mobilenet_v2 and nothing but
`model_uri` set, sends REST binData predictions of parrot.jpg (8 at once with GUNICORN_THREADS=8),
reads /health/status and the Prometheus endpoint, and then measures every process of the tree.
The figure checked is the tree's PSS as if it were alone on the machine (each physical page of the
tree counted once): on a shared machine the kernel's PSS divides library pages with unrelated
processes and comes out lower. The limits guard the figures of a fresh clone, where CI runs this suite
and library pages weigh more than in a long-used tree (docs/benchmarks.md, Memory).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import requests
from seldon_core.proto import prediction_pb2

from tests.support.harness import process_tree
from tests.support.memory import measure
from tests.support.paths import MOBILENET_V2, image_bytes

# Regression guards: the fresh-clone figures plus about 7 %.
LIMIT_MB = {"defaults": 190.0, "threads8": 205.0}


@pytest.mark.parametrize("config", ["defaults", "threads8"])
def test_tflite_tree_fits_its_memory_limit_after_predictions(config):
    result = measure("TFLiteServer", config)
    tree_mb = result["alone_pss_mb"] if result["alone_pss_mb"] is not None else result["pss_mb"]
    table = "\n".join(f"{p['role']}: {p['Pss_alone'] or p['Pss']} kB" for p in result["processes"])
    assert tree_mb <= LIMIT_MB[config], f"{config}: {tree_mb} MB > {LIMIT_MB[config]} MB\n{table}"
    assert result["pss_mb"] <= tree_mb + 0.5  # the kernel's PSS can only be lower
    # every request's metrics reached Prometheus from the REST worker, through the Manager in the main process
    assert result["metrics_ok"]
    # one process: the main process serves REST (one worker, no arbiter) beside the metrics Manager and endpoint
    roles = sorted(p["role"] for p in result["processes"])
    assert roles == ["main (REST) + metrics Manager, metrics endpoint"], roles


@pytest.mark.parametrize("grpc_workers", ["1", "2"])
def test_metrics_of_rest_and_grpc_reach_prometheus_through_the_main_process(start_server, grpc_workers):
    """The metrics store and endpoint live on threads of the main process: REST and gRPC reach them, from the
    main process itself (GRPC_WORKERS=1: one process serves both) or from forked gRPC workers."""
    server = start_server(
        "TFLiteServer", env={"GRPC_WORKERS": grpc_workers}, model_uri=str(MOBILENET_V2), metrics_interval=0.0
    )
    for _ in range(2):
        server.image("parrot.jpg")
        server.grpc(prediction_pb2.SeldonMessage(binData=image_bytes("parrot.jpg")))
    text = requests.get(f"http://127.0.0.1:{server.metrics_port}/prometheus", timeout=10).text
    counts = [line for line in text.splitlines() if line.startswith("edgeservers_inference_seconds_count{")]
    assert sum(float(line.split()[-1]) for line in counts) == 4
    workers = {re.search(r'worker_id="(\d+)"', line).group(1) for line in counts}
    assert len(workers) == (1 if grpc_workers == "1" else 2)  # the main process alone, or beside a gRPC worker


def _minor_faults(pid: int) -> int:
    """Minor page faults of the whole process tree so far (field 10 of /proc/<pid>/stat)."""
    return sum(int(Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()[7]) for p in process_tree(pid))


def test_request_buffers_are_reused_not_faulted_in_again(start_server):
    """Freed request buffers stay in malloc's heap for the next request (process_tuning.tuned_malloc).

    A parrot.jpg JSON request holds buffers of 0.4-1.4 MB (the body, its JSON string, the decoded JPEG, its
    pixels decoded whole): with glibc's 128 KiB trim threshold each would be given back and faulted in again
    (docs/benchmarks.md). No timing: page faults are counted by the kernel."""
    server = start_server("TFLiteServer", env={"GRPC_WORKERS": "0"}, model_uri=str(MOBILENET_V2))
    for _ in range(5):
        server.image("parrot.jpg")
    before = _minor_faults(server.proc.pid)
    requests_sent = 20
    for _ in range(requests_sent):
        server.image("parrot.jpg")
    per_request = (_minor_faults(server.proc.pid) - before) / requests_sent
    assert per_request < 400, (
        f"{per_request:.0f} page faults per request: freed buffers are given back and faulted in again"
    )


def test_a_long_tmpdir_does_not_stop_the_server(start_server, tmp_path):
    """The metrics Manager listens on an abstract unix socket: multiprocessing's default, a socket file in
    TMPDIR, fails past 107 bytes of path ("AF_UNIX path too long") and took the server down at start."""
    long_tmp = tmp_path / ("t" * 60) / ("m" * 60)
    long_tmp.mkdir(parents=True)
    server = start_server("TFLiteServer", env={"TMPDIR": str(long_tmp)}, model_uri=str(MOBILENET_V2))
    assert server.image("parrot.jpg")["jsonData"][0]["label"] == "macaw"
