"""What the adapter keeps while the server runs, in one object that `install()` creates in the wrapper's main
process, before it forks: every forked part starts with a copy, and the two shared maps stay shared."""

from __future__ import annotations

import mmap
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import grpc

from .rest_worker import RestOptions


@dataclass
class AdapterState:
    installed: bool = False  # install() has patched the wrapper
    rest_options: RestOptions = field(default_factory=RestOptions)
    values_limit: int | None = None  # JSON values a v1 request may hold (json_limits.values_limit)
    grpc_reflection: bool = False  # serve gRPC server reflection (the parameter grpc_reflection)
    grpc_registrars: list[Callable[[grpc.Server], None]] = field(default_factory=list)  # services added to Seldon's
    process_metrics: Any = None  # this process's SeldonMetrics, once the wrapper has built its server with it
    metrics_stores: list[Any] = field(default_factory=list)  # every SeldonMetrics created (their Managers watched)
    grpc_endpoints: list[tuple[str, int]] = field(default_factory=list)  # where gRPC listens (readiness checks)
    manager_objects: dict[str, Any] = field(default_factory=dict)  # the dict and lock SeldonMetrics made on the Manager
    rest_in_main_process: bool = False  # one REST worker that never restarts: served by the main process itself
    # Shared with every process forked after install(): "<part> (pid N) ..." while a part is down; 1 once any
    # process of the server was told to stop.
    down: mmap.mmap = field(default_factory=lambda: mmap.mmap(-1, 512))
    stopping: mmap.mmap = field(default_factory=lambda: mmap.mmap(-1, 1))

    def mark_down(self, text: str) -> None:
        data = text.encode()[: len(self.down) - 1]
        self.down.seek(0)
        self.down.write(data + b"\0" * (len(self.down) - len(data)))

    def marked_down(self) -> str:
        return self.down[:].split(b"\0", 1)[0].decode(errors="replace")

    def note_stop(self) -> None:
        self.stopping[0] = 1

    def stop_noted(self) -> bool:
        return self.stopping[0] == 1


_state: AdapterState | None = None


def create() -> AdapterState:
    """The state, created once (install() calls this in the main process)."""
    global _state
    if _state is None:
        _state = AdapterState()
    return _state


def current() -> AdapterState:
    """The state of this server (created on first use outside install(), e.g. in a test)."""
    return create()
