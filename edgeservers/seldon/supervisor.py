"""Crash-only supervision: every part of the server is a child of the main process, which watches them, and
readiness that tells the truth.

As shipped, the wrapper's start_servers runs gunicorn's arbiter (REST) in the main process and the gRPC parent
(which only join()s its workers), the metrics server and a custom server as children; nothing watches them,
and gunicorn's SIGCHLD handler reaps every child of the main process, so a dead one is never even noticed.
Here each gRPC worker (and a custom server) is a child of the main process, and so is REST's gunicorn arbiter
when REST has several workers or restarts them (GUNICORN_WORKERS > 1, GUNICORN_MAX_REQUESTS); one REST worker
that never restarts (the chart's defaults) is served by the main process itself (an arbiter and a forked
worker would only copy the main process's pages), the supervisor then watching from a thread.

When a part ends unexpectedly the supervisor writes one line naming it and how it ended, marks the server
down (readiness fails), stops the others and exits 1, so that the kubelet restarts the container. Inside the
REST part, what heals stays as it was: gunicorn restarts a dead worker, unless the new worker cannot boot.
SIGTERM or SIGINT to the main process stops every part (REST gracefully) and exits 0. Any process of the
server that is told to stop notes it before stopping (AdapterState.note_stop), so a part that ends after a
stop was asked is seen as stopping, not as a crash: the process group's SIGTERM, which reaches every part at
once, exits 0 however the parts' exits interleave.
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import multiprocessing.connection
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import grpc
from seldon_core import microservice

from . import state
from .grpc import GrpcWorkers
from .metrics import MetricsManager
from .patches import patch, relies_on

STOP_TIMEOUT = 30.0  # seconds the parts get to stop (gunicorn's graceful timeout) before SIGKILL
# The parts are closures over the wrapper's objects: forked, as the wrapper does.
_FORK = multiprocessing.get_context("fork")

relies_on(
    "seldon_core.microservice:main",
    "584fe2ae31a79ef1",
    (
        "builds the component (so install() runs) and SeldonMetrics (its Manager) before calling the module "
        "globals _make_grpc_server(user_object, seldon_metrics, args, annotations), "
        "_make_rest_metrics_server(seldon_metrics, args) (None here: no metrics process) and "
        "start_servers(rest, grpc, custom, metrics)"
    ),
)
relies_on(
    "seldon_core.seldon_methods:health_status",
    "eafb8377db12964d",
    "returns user_model.health_status_raw() when present",
)
relies_on(
    "gunicorn.arbiter:Arbiter.stop",
    "8f62d8857b595156",
    "closes the listeners, SIGTERMs the workers, waits graceful_timeout, then SIGKILL",
)


def unavailable() -> list[str]:
    """The parts of this server that are down, as seen from a worker: what the supervisor marked, the
    metrics Manager unreachable, the gRPC port not accepting. Empty when every part is up."""
    adapter = state.current()
    down = [adapter.marked_down()] if adapter.marked_down() else []
    for metrics in adapter.metrics_stores:
        if isinstance(getattr(metrics, "_manager", None), MetricsManager):
            continue  # on threads of the supervisor (seldon/metrics.py): up as long as the server is
        try:
            len(metrics.data)  # one round trip to the Manager
        except Exception as e:  # ConnectionRefusedError, EOFError, BrokenPipeError, ...
            down.append(f"the metrics Manager is unreachable ({type(e).__name__})")
    for host, port in adapter.grpc_endpoints:
        try:
            socket.create_connection(
                ("127.0.0.1" if host in ("0.0.0.0", "", "[::]") else host.strip("[]"), port), 1.0
            ).close()
        except OSError as e:
            down.append(f"gRPC is not accepting connections on port {port} ({e.strerror or type(e).__name__})")
    return down


def _how_it_ended(name: str, code: int | None) -> str:
    if code is None:
        return "ended (exit status unknown)"
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    gunicorn = {3: " (gunicorn: a worker failed to boot)", 4: " (gunicorn: the app failed to load)"}
    return f"exited with code {code}" + (gunicorn.get(code, "") if name in ("REST server", "metrics server") else "")


def _children(pid: int) -> list[int]:
    """The processes forked by any thread of `pid` (or given to it as orphans), zombies included."""
    children: list[int] = []
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError), open(f"/proc/{pid}/task/{task}/children") as f:
                children.extend(int(c) for c in f.read().split())
    return children


def _descendants(pid: int) -> list[int]:
    found: list[int] = []
    todo = [pid]
    while todo and len(found) < 10_000:
        children = _children(todo.pop())
        found.extend(children)
        todo.extend(children)
    return found


PR_SET_CHILD_SUBREAPER = 36  # <linux/prctl.h>


def _adopt_orphans() -> None:
    """Make this process the one that orphans below it are given to (instead of init), so that stopping
    finds every one: the workers of a REST arbiter killed a moment after forking them, seen by no earlier
    look, once lived on and held the container's stderr open. Linux 3.4+; elsewhere nothing changes."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def _pidfd(pid: int | None) -> int | None:
    """A descriptor that becomes readable when the process ends (Linux 5.3+), else None (then polled).

    A Process's own sentinel is no use here: the parts' children (gunicorn workers) inherit it, so it
    stays silent while an orphaned worker lives on."""
    try:
        return os.pidfd_open(pid) if pid else None
    except (AttributeError, OSError):
        return None


class Supervisor:
    POLL = 0.5  # seconds between checks when no pidfd wakes the supervisor earlier

    def __init__(self) -> None:
        self.parts: list[tuple[str, multiprocessing.process.BaseProcess]] = []
        self.servers: list[tuple[str, grpc.Server]] = []  # in this process, beside REST
        self.ended_servers: list[str] = []  # those that stopped on their own
        self.stop_signal: int | None = None

    def start(self, name: str, target: Callable[[], None]) -> None:
        process = _FORK.Process(target=target, name=name, daemon=False)
        process.start()
        self.parts.append((name, process))

    def keep(self, name: str, server: grpc.Server) -> None:
        """Watch a server running in this process (after every fork: grpc's threads must not be forked)."""
        self.servers.append((name, server))

        def until_it_ends() -> None:
            server.wait_for_termination()
            self.ended_servers.append(name)

        threading.Thread(target=until_it_ends, name=f"watch {name}", daemon=True).start()

    def stop_servers(self, grace: float) -> None:
        """Stop the servers of this process, letting calls in flight finish for at most `grace` seconds."""
        state.current().note_stop()
        for _, server in self.servers:
            server.stop(grace).wait(grace + 1.0)

    def _on_signal(self, signum: int, frame: Any) -> None:
        state.current().note_stop()
        self.stop_signal = self.stop_signal or signum

    def watch(self) -> str | None:
        """Wait until a part ends unasked (then the line naming it and how it ended, the server marked down)
        or a stop is asked (None), including a part that ends once any process of the server was told to stop."""
        watched = list(self.parts) + [
            ("Seldon's metrics Manager", m._manager._process)
            for m in state.current().metrics_stores
            if getattr(m._manager, "_process", None)
        ]  # a MetricsManager (seldon/metrics.py) has no process: it runs on threads of this one
        fds = [fd for fd in (_pidfd(p.pid) for _, p in watched) if fd is not None]
        try:
            while self.stop_signal is None:
                multiprocessing.connection.wait(fds, timeout=self.POLL)
                if self.stop_signal is not None:
                    break
                ended = [f"{name} (in pid {os.getpid()}) stopped" for name in self.ended_servers]
                ended += [
                    f"{name} (pid {process.pid}) {_how_it_ended(name, process.exitcode)}"
                    for name, process in watched
                    if process.exitcode is not None  # this process is the parent of every part: waitpid works
                ]
                if ended:
                    if state.current().stop_noted():
                        return None
                    state.current().mark_down(ended[0])
                    print(
                        f"edgeservers: {ended[0]}: stopping the whole server (exit 1) so that it is restarted",
                        file=sys.stderr,
                        flush=True,
                    )
                    return ended[0]
            return None
        finally:
            for fd in fds:
                os.close(fd)

    def run(self) -> int:
        """Watch every part (REST among them) until one ends (exit 1) or a stop signal arrives (exit 0)."""
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._on_signal)
        if self.watch():
            self.stop_all(signal.SIGTERM)
            return 1
        self.stop_all(self.stop_signal or signal.SIGTERM)
        return 0

    def run_with_rest(self, rest: Callable[[], None]) -> int:
        """Serve REST in this process, whose worker owns SIGTERM and SIGINT, and watch the parts from a
        thread: a part that ends stops REST as SIGTERM does (gracefully); the server exits 1 when the part
        ended unasked, 0 when a stop had been asked."""
        ended: list[str] = []

        def watch() -> None:
            line = self.watch()
            if line:
                ended.append(line)
            if line or not self.stop_signal:  # a part ended (crashed, or told to stop alone): REST stops too
                os.kill(os.getpid(), signal.SIGTERM)

        watcher = threading.Thread(target=watch, name="supervisor", daemon=True)
        watcher.start()
        try:
            rest()
        finally:
            self.stop_servers(state.current().rest_options.graceful_timeout)
            self.stop_signal = self.stop_signal or signal.SIGTERM
            watcher.join()
            self.stop_all(signal.SIGTERM)
        return 1 if ended else 0

    def stop_all(self, signum: int) -> None:
        """Ask every live part, and the orphans of a dead one (adopted by this process), to stop (REST and
        metrics finish their requests, as gunicorn does on SIGTERM); SIGKILL whatever is left below this
        process after STOP_TIMEOUT."""
        ours = os.getpgid(0)
        parts = {process.pid for _, process in self.parts if process.pid}
        live = [process.pid for _, process in self.parts if process.pid and process.exitcode is None]
        orphans = [pid for pid in _children(os.getpid()) if pid not in parts]
        for pid in live + orphans:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signum)
        deadline = time.monotonic() + STOP_TIMEOUT
        for _, process in self.parts:
            process.join(timeout=max(0.0, deadline - time.monotonic()))
        while time.monotonic() < deadline and any(_alive_in_group(p, ours) for p in _descendants(os.getpid())):
            time.sleep(0.1)
        for pid in _descendants(os.getpid()):
            if _alive_in_group(pid, ours):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
        for _, process in self.parts:
            process.join(timeout=5.0)


def _alive_in_group(pid: int, group: int) -> bool:
    """Still running (not a zombie) and still in this server's process group (the pid was not reused)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return fields[0] != "Z" and int(fields[2]) == group  # state, ppid, pgrp
    except (OSError, IndexError, ValueError):
        return False


def _start_servers(
    target1: Callable, target2: Callable | None, target3: Callable | None, metrics_target: Callable | None
) -> None:
    """The wrapper's start_servers, supervised: every part a child of this process, which watches them."""
    _adopt_orphans()
    supervisor = Supervisor()
    rest_here = getattr(target1, "one_worker", False)  # one REST worker that never restarts: no arbiter
    with contextlib.ExitStack() as stack:
        grpc_here = None  # gRPC in this process too, started once every part is forked
        if isinstance(target2, GrpcWorkers):
            bind_address = stack.enter_context(target2.reserved())
            if rest_here and target2.count == 1:
                grpc_here = target2
            for i in range(0 if grpc_here else target2.count):
                supervisor.start(f"gRPC worker {i + 1} of {target2.count}", target2.target(bind_address))
        elif target2:
            supervisor.start("gRPC server", target2)
        if target3:
            supervisor.start("custom server", target3)
        if metrics_target:
            supervisor.start("metrics server", metrics_target)
        if grpc_here is not None:
            supervisor.keep("gRPC server", grpc_here.serve_here(bind_address))
        if rest_here:
            state.current().rest_in_main_process = True
            code = supervisor.run_with_rest(target1)
        else:
            supervisor.start("REST server", target1)
            code = supervisor.run()
    sys.exit(code)


def install() -> None:
    patch(
        microservice,
        "start_servers",
        _start_servers,
        source_sha="7f3592a58382beda",
        why=(
            "replaced (its targets kept): REST's arbiter ran in the main process, nothing watched; the REST target "
            "is the closure _make_rest_server_prod returns"
        ),
    )
