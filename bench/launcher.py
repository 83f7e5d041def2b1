"""Start a real `seldon-core-microservice` on free loopback ports, time its cold start, measure its memory.

The wrapper runs from the repo root with PREDICTIVE_UNIT_PARAMETERS in its environment, in its own
process group so that stopping it stops every worker it forked. The helpers here (free ports, the
parameter list, the command, stopping the group) are also the tests' (tests/conftest.py,
tests/test_contract.py): standard library only.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent
MICROSERVICE = Path(sys.executable).parent / "seldon-core-microservice"


def free_port() -> int:
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def parameters(values: dict[str, Any]) -> str:
    """PREDICTIVE_UNIT_PARAMETERS as Seldon's operator writes it: a typed name/value/type list."""
    types = {bool: "BOOL", int: "INT", float: "FLOAT", str: "STRING"}
    return json.dumps(
        [{"name": k, "value": str(v).lower() if isinstance(v, bool) else str(v), "type": types[type(v)]} for k, v in values.items()]
    )


def microservice_command(interface: str, http_port: int, grpc_port: int, metrics_port: int) -> list[str]:
    """`seldon-core-microservice <interface>` as a model, on the given ports."""
    return [
        str(MICROSERVICE), interface, "--service-type", "MODEL",
        "--http-port", str(http_port), "--grpc-port", str(grpc_port), "--metrics-port", str(metrics_port),
    ]


def stop_process_group(proc: subprocess.Popen, timeout: float) -> None:
    """SIGTERM the server's whole process group (every worker it forked), SIGKILL after `timeout` s."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


def process_tree(pid: int) -> list[int]:
    pids, todo = [], [pid]
    while todo:
        p = todo.pop()
        pids.append(p)
        todo.extend(_children(p))
    return pids


def _status_kb(pid: int, field: str) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _pss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def tree_memory(pid: int) -> dict[str, Any]:
    """RSS summed over the whole process tree (counts pages shared by forked workers once per process),
    and PSS summed (each shared page divided among its sharers: what the tree really occupies)."""
    pids = process_tree(pid)
    rss = sum(_status_kb(p, "VmRSS") for p in pids)
    pss = sum(_pss_kb(p) for p in pids)
    return {"processes": len(pids), "rss_mb": round(rss / 1024, 1), "pss_mb": round(pss / 1024, 1)}


class Server:
    """One `seldon-core-microservice <interface>` process tree (REST + gRPC + metrics) on free loopback ports."""

    def __init__(self, interface: str, params: dict[str, Any], env: dict[str, str] | None = None):
        self.interface = interface
        self.http_port, self.grpc_port, self.metrics_port = free_port(), free_port(), free_port()
        self.env = {
            **os.environ,
            "PREDICTIVE_UNIT_PARAMETERS": parameters(params),
            "PREDICTIVE_UNIT_METRICS_ENDPOINT": "/prometheus",
            **(env or {}),
        }
        self.url = f"http://127.0.0.1:{self.http_port}/api/v1.0/predictions"
        self.grpc_target = f"127.0.0.1:{self.grpc_port}"
        self.proc: subprocess.Popen | None = None
        self.cold_start_s: float | None = None

    def start(self, first_prediction: Callable[["Server"], bool], timeout: float = 120.0) -> "Server":
        """Start and poll `first_prediction` until it succeeds: cold start = process start to that moment."""
        self._log = open(os.devnull, "wb")
        self._err_path = Path(os.environ.get("TMPDIR", "/tmp")) / f"bench-{os.getpid()}-{self.http_port}.err"
        self._err = open(self._err_path, "wb")
        started = time.perf_counter()
        self.proc = subprocess.Popen(
            microservice_command(self.interface, self.http_port, self.grpc_port, self.metrics_port),
            cwd=ROOT, env=self.env, stdout=self._log, stderr=self._err, start_new_session=True,
        )
        deadline = started + timeout
        while time.perf_counter() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.interface} exited with {self.proc.returncode}: {self.stderr_tail()}")
            try:
                if first_prediction(self):
                    self.cold_start_s = time.perf_counter() - started
                    return self
            except Exception:  # not listening yet
                pass
            time.sleep(0.05)
        self.stop()
        raise TimeoutError(f"{self.interface} gave no prediction within {timeout}s: {self.stderr_tail()}")

    def stderr_tail(self) -> str:
        try:
            return self._err_path.read_text(errors="replace")[-2000:]
        except OSError:
            return ""

    def memory(self) -> dict[str, Any]:
        assert self.proc is not None
        return tree_memory(self.proc.pid)

    def stop(self) -> None:
        if self.proc:
            stop_process_group(self.proc, timeout=20)
        for f in ("_log", "_err"):
            if hasattr(self, f):
                getattr(self, f).close()
        if hasattr(self, "_err_path"):
            self._err_path.unlink(missing_ok=True)
