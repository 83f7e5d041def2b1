"""Health that tells the truth, crash-only parts: every process the server runs is watched.

Each test starts its own real `seldon-core-microservice`, finds one of its parts by what it listens on
(REST, gRPC and metrics ports, the metrics Manager's unix socket), kills it with SIGKILL and checks that
the server goes down with a non-zero exit and one line naming the part and the signal, so the kubelet
restarts the container. With the supervisor stopped (SIGSTOP) nothing can exit: then /health/status
(the readiness probe) must fail, naming the part that is down.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests

from tests.support.clients import ModelServer
from tests.support.harness import listening_inodes, process_tree, socket_inodes
from tests.support.paths import MOBILENET_V2

DEADLINE = 60.0  # seconds for anything to happen; polled, never asserted as a timing


def _unix_listeners(path_part: str) -> set[int]:
    inodes = set()
    with open("/proc/net/unix") as f:
        for line in list(f)[1:]:
            fields = line.split()
            if len(fields) >= 8 and path_part in fields[7] and int(fields[3], 16) & 0x10000:  # __SO_ACCEPTCON
                inodes.add(int(fields[6]))
    return inodes


def _ppid(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except OSError:
        return -1


def part(server: ModelServer, which: str) -> int:
    """The pid of one part: "grpc" (a gRPC worker), "manager" (Seldon's metrics Manager), "rest" and
    "metrics" (their gunicorn arbiters), "rest worker" (a gunicorn worker serving REST). Found by what
    they listen on, wherever they are in the tree."""
    assert server.proc is not None
    main = server.proc.pid
    listeners = {
        "grpc": listening_inodes(server.grpc_port),
        "rest": listening_inodes(server.http_port),
        "rest worker": listening_inodes(server.http_port),
        "metrics": listening_inodes(server.metrics_port),
        "manager": _unix_listeners("listener-"),
    }[which]
    tree = process_tree(main)
    found = [p for p in tree if socket_inodes(p) & listeners]
    # gunicorn's arbiter and its workers share the listening socket: the arbiter is the one whose parent does not
    if which in ("rest", "metrics"):
        found = [p for p in found if _ppid(p) not in found]
    elif which == "grpc":
        found = found[:1]  # one of the gRPC workers, each listening with SO_REUSEPORT
    elif which == "rest worker":
        found = [p for p in found if _ppid(p) in found][:1]  # one of them
    assert len(found) == 1, f"{which}: {found} in {tree}"
    return found[0]


def wait_for_exit(server: ModelServer) -> tuple[int, str]:
    assert server.proc is not None
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline and server.proc.poll() is None:
        time.sleep(0.2)
    assert server.proc.poll() is not None, f"the server was still running {DEADLINE}s after the fault"
    return server.proc.returncode, server.stderr_after_exit(DEADLINE)


def assert_nothing_left(server: ModelServer) -> None:
    """No process of the server's group is left running (every part stopped with it; zombies are dead)."""
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        left = [p for p in map(int, filter(str.isdigit, os.listdir("/proc"))) if _pgid(p) == server.pid]
        if not left:
            return
        time.sleep(0.2)
    raise AssertionError(f"processes of the server still running: {left}")


def _pgid(pid: int) -> int:
    """The process group of a running process; -1 for a zombie or a process gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return -1 if fields[0] == "Z" else int(fields[2])  # state, ppid, pgrp
    except OSError:
        return -1


def one_line(stderr: str, pattern: str) -> str:
    lines = [line for line in stderr.splitlines() if line.startswith("edgeservers: ")]
    assert len(lines) == 1, stderr[-3000:]
    assert re.search(pattern, lines[0]), lines[0]
    return lines[0]


@pytest.fixture
def served() -> Iterator[Callable[..., ModelServer]]:
    servers: list[ModelServer] = []

    def start(workers: int = 1, grpc_workers: int = 1, **params) -> ModelServer:
        # one REST worker (the chart's default) runs in the main process, and with GRPC_WORKERS=1 serves gRPC
        # there too; more REST workers run under gunicorn's arbiter, and gRPC then in a forked worker
        env = {"GUNICORN_WORKERS": str(workers), "GUNICORN_THREADS": "1", "GRPC_WORKERS": str(grpc_workers)}
        server = ModelServer("TFLiteServer", env=env, **{"model_uri": str(MOBILENET_V2), **params}).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        if server.alive():
            os.kill(server.pid, signal.SIGCONT)
        server.stop()


def _status(server: ModelServer) -> tuple[int, str]:
    response = requests.get(server.url + "/health/status", timeout=30)
    return response.status_code, response.text


@pytest.mark.parametrize(
    "which, name, words",
    [
        ("grpc", r"gRPC worker 1 of 1 \(pid \d+\) was killed by SIGKILL", "gRPC is not accepting connections"),
        # Seldon's metrics Manager is no process of its own any more: it runs on threads of the main process
        # (edgeservers/seldon/metrics.py), so it cannot be down while the server is up.
    ],
)
def test_readiness_fails_while_a_part_is_down_and_the_server_then_exits(served, which, name, words):
    server = served(2)  # REST in a process of its own, answering while the main process is stopped
    assert _status(server)[0] == 200
    victim = part(server, which)
    os.kill(server.proc.pid, signal.SIGSTOP)  # the supervisor cannot act: the part stays down
    try:
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + DEADLINE
        status, text = _status(server)
        while status == 200 and time.monotonic() < deadline:
            time.sleep(0.2)
            status, text = _status(server)
        assert status == 503 and words in text, (status, text)
    finally:
        os.kill(server.proc.pid, signal.SIGCONT)
    code, stderr = wait_for_exit(server)
    assert code != 0
    one_line(stderr, name + r": stopping the whole server \(exit 1\)")
    assert_nothing_left(server)


@pytest.mark.parametrize(
    "which, workers, grpc_workers, name",
    [
        # with one REST worker REST is served by the main process itself, and so is gRPC with GRPC_WORKERS=1
        # (no part to kill: edgeservers/seldon/supervisor.py watches that server from a thread); the metrics
        # endpoint is a thread of the main process too
        ("rest", 2, 1, r"REST server \(pid \d+\) was killed by SIGKILL"),
        ("grpc", 1, 2, r"gRPC worker \d of 2 \(pid \d+\) was killed by SIGKILL"),
        ("grpc", 2, 1, r"gRPC worker 1 of 1 \(pid \d+\) was killed by SIGKILL"),
    ],
)
def test_a_killed_part_takes_the_whole_server_down(served, which, workers, grpc_workers, name):
    server = served(workers, grpc_workers)
    os.kill(part(server, which), signal.SIGKILL)
    code, stderr = wait_for_exit(server)
    assert code == 1
    one_line(stderr, name)
    assert_nothing_left(server)


def test_a_worker_that_cannot_load_the_model_after_a_restart_takes_the_server_down(served, tmp_path):
    model_dir = tmp_path / "model"
    shutil.copytree(MOBILENET_V2, model_dir)
    server = served(2, model_uri=str(model_dir))  # gunicorn's arbiter restarts workers
    assert server.image("parrot.jpg")["jsonData"][0]["label"] == "macaw"
    (model_file,) = Path(model_dir).glob("*.tflite")
    model_file.write_bytes(b"not a model any more")
    os.kill(part(server, "rest worker"), signal.SIGKILL)  # gunicorn starts a new worker, which cannot load
    code, stderr = wait_for_exit(server)
    assert code == 1
    one_line(stderr, r"REST server \(pid \d+\) exited with code 3 \(gunicorn: a worker failed to boot\)")
    assert_nothing_left(server)


@pytest.mark.parametrize("workers", [1, 2])
def test_sigterm_to_the_main_process_alone_stops_every_part_with_exit_0(served, workers):
    """What the kubelet does: SIGTERM to the container's first process only."""
    server = served(workers)
    os.kill(server.proc.pid, signal.SIGTERM)
    code, stderr = wait_for_exit(server)
    assert code == 0, stderr[-3000:]
    assert "edgeservers: " not in stderr
    assert_nothing_left(server)


def test_a_grpc_server_in_the_main_process_that_stops_takes_the_server_down():
    """With one REST worker and GRPC_WORKERS=1 the main process serves gRPC itself: there is no process to kill,
    so the supervisor watches the server (a real one here, in this process) and, when it stops unasked, marks
    the server down (readiness answers 503 naming it) and ends the watch with the one line it prints."""
    from concurrent.futures import ThreadPoolExecutor

    import grpc

    from edgeservers.seldon import state
    from edgeservers.seldon.supervisor import Supervisor, unavailable

    server = grpc.server(ThreadPoolExecutor(1))
    server.add_insecure_port("127.0.0.1:0")
    server.start()
    supervisor = Supervisor()
    supervisor.keep("gRPC server", server)
    server.stop(None)
    try:
        line = supervisor.watch()
        assert line is not None and re.fullmatch(r"gRPC server \(in pid \d+\) stopped", line), line
        assert unavailable() == [line]
    finally:
        state.current().mark_down("")  # this process's state, which other in-process tests read
