"""The benchmark's server: a real `seldon-core-microservice` started through the tests' harness
(tests/harness.py), its cold start timed to the first prediction and its memory measured.

The names the tests once imported from here (free_port, parameters, microservice_command,
stop_process_group, process_tree, tree_memory) are the harness's, re-exported.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness import (  # noqa: F401 (re-exported)
    MICROSERVICE,
    ROOT,
    Microservice,
    free_port,
    microservice_command,
    parameters,
    process_tree,
    stop_process_group,
    tree_memory,
)


def use_checkout(root: str | Path) -> None:
    """Start servers from another checkout (e.g. a worktree of an earlier commit), measured by this harness
    and against this tree's in-process reference."""
    global ROOT
    ROOT = Path(root).resolve()


class Server(Microservice):
    """One `seldon-core-microservice <interface>` process tree (REST + gRPC + metrics) on free ports,
    run from ROOT (set it to measure another checkout), listening as the wrapper does (no loopback
    shim: the benchmark measures the server as shipped). `url` is the predictions endpoint."""

    def __init__(self, interface: str, params: dict[str, Any], env: dict[str, str] | None = None):
        super().__init__(interface, params, env, loopback=False, cwd=ROOT)
        self.url += "/api/v1.0/predictions"
        self.grpc_target = f"127.0.0.1:{self.grpc_port}"

    def start(self, first_prediction: Callable[[Server], bool], timeout: float = 120.0) -> Server:  # type: ignore[override]
        """Start and poll `first_prediction` until it succeeds: cold start = process start to that moment."""
        super().start(lambda: first_prediction(self), timeout)
        return self

    @property
    def cold_start_s(self) -> float | None:
        return self.ready_s
