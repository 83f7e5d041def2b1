"""The one way tests, the benchmark and the image test start, wait for, stop and measure a server.

A server under test is the real `seldon-core-microservice` (or any command) in its own process group
on free loopback ports, its stderr kept in a file for the error message when it fails. Standard
library only at import time (docker/image_test.py runs with the host's python3); `grpc` is imported
only when a gRPC port is waited for.
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import IO, Any, Self

from tests.support.paths import ROOT

MICROSERVICE = Path(sys.executable).parent / "seldon-core-microservice"
LOOPBACK_SHIM = (
    Path(__file__).resolve().parent / "loopback"
)  # sitecustomize.py: the wrapper's 0.0.0.0 binds on 127.0.0.1
PORT_TAKEN = ("Connection in use", "Address already in use")  # gunicorn's and the OS's words for a taken port
METRICS_ENDPOINT = "/prometheus"  # what the Seldon v1 operator sets (PREDICTIVE_UNIT_METRICS_ENDPOINT)
# make, in the venv `make test` has just installed: `-o install` keeps make from installing again.
MAKE = ["make", "-s", "--no-print-directory", "-o", "install"]


def free_port() -> int:
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def listening_on(port: int) -> Iterator[None]:
    """Another process's listener on a loopback port, for as long as the `with` block lasts."""
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", port))
        squatter.listen()
        yield


def parameters(values: dict[str, Any]) -> str:
    """PREDICTIVE_UNIT_PARAMETERS as Seldon's operator writes it: a typed name/value/type list."""
    types = {bool: "BOOL", int: "INT", float: "FLOAT", str: "STRING"}
    return json.dumps(
        [
            {"name": k, "value": str(v).lower() if isinstance(v, bool) else str(v), "type": types[type(v)]}
            for k, v in values.items()
        ]
    )


def microservice_command(interface: str, http_port: int, grpc_port: int, metrics_port: int) -> list[str]:
    """`seldon-core-microservice <interface>` as a model, on the given ports."""
    return [
        str(MICROSERVICE),
        interface,
        "--service-type",
        "MODEL",
        "--http-port",
        str(http_port),
        "--grpc-port",
        str(grpc_port),
        "--metrics-port",
        str(metrics_port),
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


# --- readiness ---------------------------------------------------------------------------------


def wait_for(condition: Callable[[], Any], seconds: float = 60.0, what: str = "", poll: float = 0.1) -> Any:
    """The first truthy value of `condition()`, polled until `seconds` have passed (a bound on "it happens", never
    a timing claim)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"not within {seconds} s: {what}")


def http_ok(url: str, timeout: float = 1.0) -> bool:
    """True when GET `url` answers 2xx."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return 200 <= response.status < 300
    except (urllib.error.URLError, OSError):
        return False


def grpc_ready(target: str, timeout: float = 1.0) -> bool:
    """True when a gRPC channel to `target` connects."""
    import grpc

    with grpc.insecure_channel(target) as channel:
        try:
            grpc.channel_ready_future(channel).result(timeout=timeout)
            return True
        except grpc.FutureTimeoutError:
            return False


# --- /proc ---------------------------------------------------------------------------------------


def listening_hosts(port: int) -> set[str]:
    """Local addresses ("127.0.0.1", "::1", "0.0.0.0", ...) of the TCP sockets listening on `port`, from /proc/net."""
    hosts = set()
    for table, family in (("/proc/net/tcp", socket.AF_INET), ("/proc/net/tcp6", socket.AF_INET6)):
        if not os.path.exists(table):
            continue
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            address, port_hex = fields[1].rsplit(":", 1)
            if fields[3] == "0A" and int(port_hex, 16) == port:  # 0A: LISTEN
                raw = bytes.fromhex(address)  # 32-bit words in host (little-endian) order
                packed = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
                hosts.add(socket.inet_ntop(family, packed))
    return hosts


def socket_inodes(pid: int) -> set[int]:
    """Inodes of the sockets process `pid` holds open (to match against /proc/net listeners)."""
    inodes = set()
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(int(target[8:-1]))
    except OSError:
        pass
    return inodes


def listening_inodes(port: int) -> set[int]:
    """Inodes of the TCP sockets listening on `port` (IPv4 and IPv6)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if os.path.exists(table):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                    inodes.add(int(fields[9]))
    return inodes


def children(pid: int) -> list[int]:
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
        todo.extend(children(p))
    return pids


def _proc_kb(path: str, field: str) -> int:
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def tree_memory(pid: int) -> dict[str, Any]:
    """RSS summed over the whole process tree (counts pages shared by forked workers once per process),
    and PSS summed (each shared page divided among its sharers: what the tree really occupies)."""
    pids = process_tree(pid)
    rss = sum(_proc_kb(f"/proc/{p}/status", "VmRSS") for p in pids)
    pss = sum(_proc_kb(f"/proc/{p}/smaps_rollup", "Pss") for p in pids)
    return {"processes": len(pids), "rss_mb": round(rss / 1024, 1), "pss_mb": round(pss / 1024, 1)}


def tree_cpu_s(pid: int) -> float:
    """User + system CPU seconds used so far by the tree's live processes (an exited one's are gone)."""
    ticks = 0
    for p in process_tree(pid):
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
        except OSError:
            continue
        ticks += int(fields[11]) + int(fields[12])  # utime, stime (stat fields 14 and 15)
    return ticks / os.sysconf("SC_CLK_TCK")


# --- one server process ------------------------------------------------------------------------------


def _read_some(fd: int, deadline: float) -> bytes | None:
    """The next bytes of a pipe (b"" at its end), None when nothing came before `deadline`."""
    ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
    return os.read(fd, 1 << 16) if ready else None


def _all_pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def _holds(pid: int, our_fd: int) -> bool:
    """Whether process `pid` holds the pipe that is `our_fd` here (writers of a server's stderr)."""
    try:
        ours = os.readlink(f"/proc/{os.getpid()}/fd/{our_fd}")
        return pid != os.getpid() and any(
            os.readlink(f"/proc/{pid}/fd/{fd}") == ours for fd in os.listdir(f"/proc/{pid}/fd")
        )
    except OSError:
        return False


class ServerProcess:
    """A server command in its own process group (stopping it stops every worker it forked), run from
    `cwd`, stdout discarded; started, then polled until `ready()` holds. Its stderr goes to a file, or
    with `stderr_pipe` to `proc.stderr` for the caller to read once it has exited."""

    def __init__(
        self, command: list[str], env: dict[str, str], name: str = "server", cwd: Path = ROOT, stderr_pipe: bool = False
    ):
        self.argv = command
        self.env = env
        self.name = name
        self.cwd = cwd
        self.stderr_pipe = stderr_pipe
        self.proc: subprocess.Popen | None = None
        self.ready_s: float | None = None  # process start to the first time ready() held
        self._err_file: IO[bytes] | None = None  # stderr, unless stderr_pipe

    def start(self, ready: Callable[[], bool], timeout: float = 120.0, poll: float = 0.05) -> Self:
        """Start and poll `ready` (an exception counts as not yet) until it holds (`ready_s` says when)."""
        self._err_file = None if self.stderr_pipe else tempfile.TemporaryFile()
        started = time.perf_counter()
        self.proc = subprocess.Popen(
            self.argv,
            cwd=self.cwd,
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=self._err_file or subprocess.PIPE,
            start_new_session=True,
        )
        deadline = started + timeout
        while time.perf_counter() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}: {self.stderr_tail()}")
            try:
                if ready():
                    self.ready_s = time.perf_counter() - started
                    return self
            except Exception:  # not listening yet
                pass
            time.sleep(poll)
        self.stop()
        raise TimeoutError(f"{self.name} not ready within {timeout}s: {self.stderr_tail()}")

    def stderr_after_exit(self, timeout: float = 60.0) -> str:
        """Everything the exited server wrote to its stderr pipe, read until the last writer closes it.
        Raises (instead of waiting forever) when some process of the server lives on holding the pipe."""
        assert self.proc is not None and self.proc.stderr is not None and self.proc.poll() is not None
        fd, chunks = self.proc.stderr.fileno(), []
        deadline = time.monotonic() + timeout
        while chunk := _read_some(fd, deadline):
            chunks.append(chunk)
        if chunk is None:
            holders = [p for p in _all_pids() if _holds(p, fd)]
            raise AssertionError(
                f"{self.name} exited, yet its stderr is still open {timeout}s later: held by {holders}"
            )
        return b"".join(chunks).decode(errors="replace")

    def stderr_tail(self, size: int = 3000) -> str:
        """The end of what the server wrote to stderr (with `stderr_pipe`, only once it has exited)."""
        if self.proc is None:
            return ""
        if self.stderr_pipe:
            if self.proc.poll() is None or self.proc.stderr is None or self.proc.stderr.closed:
                return ""
            return self.stderr_after_exit()[-size:]
        if self._err_file is None or self._err_file.closed:
            return ""
        self._err_file.seek(0)
        return self._err_file.read().decode(errors="replace")[-size:]

    @property
    def pid(self) -> int:
        """The server's first process, the leader of its process group."""
        assert self.proc is not None, f"{self.name} was not started"
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def memory(self) -> dict[str, Any]:
        assert self.proc is not None
        return tree_memory(self.proc.pid)

    def stop(self, timeout: float = 20) -> None:
        if self.proc:
            stop_process_group(self.proc, timeout=timeout)
            if self.proc.stderr:
                self.proc.stderr.close()
        if self._err_file is not None:
            self._err_file.close()


class Microservice(ServerProcess):
    """`seldon-core-microservice <interface>` (REST + gRPC + metrics) on free loopback ports, with the
    parameters in PREDICTIVE_UNIT_PARAMETERS as the operator passes them. Ready by default when REST
    answers /health/ping and gRPC accepts a connection."""

    def __init__(
        self,
        interface: str,
        params: dict[str, Any],
        env: dict[str, str] | None = None,
        loopback: bool = True,
        **options: Any,
    ):
        self.server_class = interface
        super().__init__(
            [],
            {
                **os.environ,
                "PREDICTIVE_UNIT_PARAMETERS": parameters(params),
                "PREDICTIVE_UNIT_METRICS_ENDPOINT": METRICS_ENDPOINT,
                **({"PYTHONPATH": str(LOOPBACK_SHIM)} if loopback else {}),
                **(env or {}),
            },
            name=interface,
            **options,
        )
        self._choose_ports()

    def _choose_ports(self) -> None:
        self.http_port, self.grpc_port, self.metrics_port = free_port(), free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.http_port}"
        self.argv = microservice_command(self.server_class, self.http_port, self.grpc_port, self.metrics_port)

    def command(self) -> list[str]:
        return self.argv

    def ready(self) -> bool:
        """REST answers its ping, and gRPC accepts connections unless GRPC_WORKERS=0 turned it off."""
        rest = http_ok(f"http://127.0.0.1:{self.http_port}/health/ping")
        grpc_on = self.env.get("GRPC_WORKERS", "1").strip() != "0"
        return rest and (not grpc_on or grpc_ready(f"127.0.0.1:{self.grpc_port}"))

    def start(self, ready: Callable[[], bool] | None = None, timeout: float = 120.0, poll: float = 0.05) -> Self:
        """Start and wait until ready. Between free_port() and the server's bind another process (a test
        in a parallel worker, a client's source port) may take a port: then the server, which exits
        saying so, starts once more on new ports (unless the caller's `ready` knows the old ones)."""
        try:
            super().start(ready or self.ready, timeout, poll)
        except RuntimeError as e:
            if ready is not None or not any(words in str(e) for words in PORT_TAKEN):
                raise
            self.stop()
            self._choose_ports()
            super().start(self.ready, timeout, poll)
        return self
