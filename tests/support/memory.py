"""Memory of a running server's process tree: PSS, private (USS) and shared memory per process, each process
named by its role, and the peak PSS while a request runs.

`measure` starts the real `seldon-core-microservice` with models/mobilenet_v2_quant and nothing but `model_uri`
set, sends REST `binData` predictions of images/parrot.jpg (multipart, as the README's curl; as many clients at
once as the worker has threads, so that every thread has worked), reads /health/status and the Prometheus
endpoint once, and then reads /proc/<pid>/smaps_rollup of every process in the tree. A process is named from
the listening sockets it holds and its place in the tree. Memory, not time, is measured: it does not depend on
the machine's load. bench/memory.py prints it as a table.
"""

from __future__ import annotations

import json
import os
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from tests.support.harness import Microservice, children, process_tree, socket_inodes, tree_memory
from tests.support.paths import MOBILENET_V2, ROOT, image_bytes
from tests.support.payloads import multipart

PREDICTIONS = "/api/v1.0/predictions"

CONFIGS = {
    # the chart's defaults (charts/edge-model): one REST worker with one thread, gRPC off
    "defaults": {"GUNICORN_WORKERS": "1", "GUNICORN_THREADS": "1", "GRPC_WORKERS": "0"},
    "threads8": {"GUNICORN_WORKERS": "1", "GUNICORN_THREADS": "8", "GRPC_WORKERS": "0"},
    "grpc": {"GUNICORN_WORKERS": "1", "GUNICORN_THREADS": "1", "GRPC_WORKERS": "1"},
}
# clients sending at once: as many as the worker has threads, so every thread has handled requests
CONCURRENCY = {"defaults": 1, "threads8": 8, "grpc": 1}

PAGE = os.sysconf("SC_PAGE_SIZE")
FIELDS = ("Rss", "Pss", "Pss_Anon", "Pss_File", "Shared_Clean", "Shared_Dirty", "Private_Clean", "Private_Dirty")


def smaps_rollup(pid: int) -> dict[str, int]:
    """kB per field of /proc/<pid>/smaps_rollup (0 when the process is gone)."""
    values = dict.fromkeys(FIELDS, 0)
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                name, _, rest = line.partition(":")
                if name in values:
                    values[name] = int(rest.split()[0])
    except OSError:
        pass
    return values


def _mapped_pages(pid: int) -> list[tuple[str, np.ndarray]] | None:
    """(mapping name, physical frame numbers of its pages in memory) for every mapping of `pid`, or
    None when they cannot be read (pagemap shows frame numbers to root only)."""
    mappings = []
    try:
        with open(f"/proc/{pid}/maps") as maps, open(f"/proc/{pid}/pagemap", "rb") as pagemap:
            for line in maps:
                cols = line.split(maxsplit=5)
                start, end = (int(x, 16) for x in cols[0].split("-"))
                name = cols[5].strip() if len(cols) > 5 else "[anon]"
                if name == "[vsyscall]":
                    continue
                pagemap.seek(start // PAGE * 8)
                entries = np.frombuffer(pagemap.read((end - start) // PAGE * 8), dtype=np.uint64)
                mappings.append((name, entries[(entries >> np.uint64(63)) == 1] & np.uint64((1 << 55) - 1)))
    except OSError:
        return None
    if any(len(f) for _, f in mappings) and not any(f.any() for _, f in mappings):
        return None  # frame numbers hidden (not root): all zero
    return mappings


def _present_pages(pid: int) -> np.ndarray | None:
    """Physical frame numbers of every page `pid` has in memory (unique), or None."""
    mappings = _mapped_pages(pid)
    if mappings is None:
        return None
    return np.unique(np.concatenate([f for _, f in mappings])) if mappings else np.zeros(0, np.uint64)


def detail(pids: list[int], top: int) -> dict[int, list[tuple[str, float, float]]]:
    """Per process, the `top` mappings (grouped by file; heap and anonymous memory as one) by their
    PSS if the tree were alone: (name, PSS kB, kB private to the process within the tree)."""
    mapped = {pid: _mapped_pages(pid) or [] for pid in pids}
    every, counts = np.unique(
        np.concatenate([np.unique(np.concatenate([f for _, f in m])) for m in mapped.values() if m]), return_counts=True
    )
    kb = PAGE // 1024
    result = {}
    for pid, mappings in mapped.items():
        by_name: dict[str, list[np.ndarray]] = {}
        for name, frames in mappings:
            key = name if name.startswith("/") else "[anon, heap, stacks]"
            by_name.setdefault(key.replace(str(ROOT) + "/", "").split("/site-packages/")[-1], []).append(frames)
        rows = []
        for key, parts in by_name.items():
            sharers = counts[np.searchsorted(every, np.unique(np.concatenate(parts)))]
            rows.append((key, float((kb / sharers).sum()), float(kb * (sharers == 1).sum())))
        result[pid] = sorted(rows, key=lambda x: -x[1])[:top]
    return result


def alone_pss(pids: list[int]) -> dict[int, dict[str, float]] | None:
    """PSS each process would have if the tree were alone on the machine (kB), and its pages shared
    with no other process of the tree.

    The kernel's PSS divides a shared page among every process on the machine that maps it, so on a
    machine running other Python processes from the same venv the tree's PSS comes out lower than on
    an edge node running only this server. Here each physical page of the tree counts once, divided
    among the tree's processes that map it: the sum is what the tree occupies on its own.
    """
    found = {pid: _present_pages(pid) for pid in pids}
    pages = {pid: frames for pid, frames in found.items() if frames is not None}
    if len(pages) < len(found):
        return None
    every, counts = np.unique(np.concatenate(list(pages.values())), return_counts=True)
    kb = PAGE // 1024
    result = {}
    for pid, frames in pages.items():
        sharers = counts[np.searchsorted(every, frames)]
        result[pid] = {"pss": float((kb / sharers).sum()), "private": float(kb * (sharers == 1).sum())}
    return result


def _listening_ports() -> dict[int, int]:
    """socket inode -> TCP port, for every listening TCP socket on the machine."""
    ports = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    cols = line.split()
                    if cols[3] == "0A":  # LISTEN
                        ports[int(cols[9])] = int(cols[1].rsplit(":", 1)[1], 16)
        except OSError:
            pass
    return ports


def _unix_listeners() -> set[int]:
    """Inodes of listening unix sockets of a metrics Manager: Seldon's (a multiprocessing path in TMPDIR)
    or edgeservers' (the abstract @edgeservers-metrics-...)."""
    inodes = set()
    with open("/proc/net/unix") as f:
        next(f)
        for line in f:
            cols = line.split()
            if (
                len(cols) >= 8
                and cols[5] == "01"
                and ("pymp-" in cols[7] or cols[7].startswith("@edgeservers-metrics-"))
            ):
                inodes.add(int(cols[6]))
    return inodes


def roles(server: Microservice) -> dict[int, str]:
    """pid -> role in the wrapper's tree, from the ports each process listens on."""
    assert server.proc is not None
    root = server.pid
    tcp, unix = _listening_ports(), _unix_listeners()
    named = {server.http_port: "REST", server.grpc_port: "gRPC", server.metrics_port: "metrics"}
    result = {}
    root_inodes = socket_inodes(root)

    def holds_rest(pid: int) -> bool:
        return any(named.get(tcp.get(i, -1)) == "REST" for i in socket_inodes(pid))

    for pid in process_tree(root):
        # A forked process also holds the listeners its parent opened before the fork: a child is named
        # by the REST socket it serves or by the sockets it opened itself.
        inodes = socket_inodes(pid)
        rest = holds_rest(pid)
        if pid != root:
            inodes -= root_inodes
        ports = sorted({named[tcp[i]] for i in inodes if tcp.get(i) in named})
        parent = bool(children(pid))
        if pid == root:
            arbiter = any(holds_rest(c) for c in children(pid))  # the wrapper's own start_servers
            role = ("main (REST arbiter)" if arbiter else "main (REST)") if rest else "main"
            extra = ["metrics Manager"] if inodes & unix else []
            extra += [f"{p} endpoint" for p in ports if p != "REST"]
            if extra:
                role += " + " + ", ".join(extra)
        elif rest:
            role = "REST arbiter" if parent else "REST worker"
        elif "gRPC" in ports:
            role = "gRPC parent" if parent else "gRPC worker"
        elif inodes & unix:
            role = "metrics Manager" + (" + metrics endpoint" if "metrics" in ports else "")
        elif ports == ["metrics"]:
            role = "metrics arbiter" if parent else "metrics worker"
        elif ports:
            role = " + ".join(ports)
        else:
            role = "gRPC parent" if parent else "other"
        result[pid] = role
    return result


def _post_image(server: Microservice, jpeg: bytes) -> dict:
    content_type, body = multipart({"binData": ("parrot.jpg", jpeg, "image/jpeg")})
    request = urllib.request.Request(server.url + PREDICTIONS, data=body, headers={"Content-Type": content_type})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=60) as response:
        return response.read().decode()


def _first_prediction(server: Microservice) -> bool:
    answer = _post_image(server, image_bytes("parrot.jpg"))
    return answer["jsonData"][0]["label"] == "macaw"


def measure(
    interface: str,
    config: str,
    requests: int = 40,
    settle_s: float = 2.0,
    env: dict[str, str] | None = None,
    top: int = 0,
) -> dict[str, Any]:
    """Start `interface` under `config`, send `requests` predictions, read health and metrics once, measure."""
    server = Microservice(interface, {"model_uri": str(MOBILENET_V2)}, {**CONFIGS[config], **(env or {})})
    server.start(lambda: _first_prediction(server))
    try:
        jpeg = image_bytes("parrot.jpg")
        clients = CONCURRENCY[config]
        with ThreadPoolExecutor(clients) as pool:
            answers = list(pool.map(lambda _: _post_image(server, jpeg), range(requests)))
        assert all(a["jsonData"][0]["label"] == "macaw" for a in answers)
        base = f"http://127.0.0.1:{server.http_port}"
        _get(base + "/health/status")
        time.sleep(1.1)  # past metrics_interval, so the next answer hands the batch over
        _post_image(server, jpeg)
        prometheus = _get(f"http://127.0.0.1:{server.metrics_port}/prometheus")
        time.sleep(settle_s)
        named = roles(server)
        processes: list[dict[str, Any]] = [
            {"pid": pid, "role": role, **smaps_rollup(pid)} for pid, role in named.items()
        ]
        alone = alone_pss(list(named))
        for p in processes:
            p["Pss_alone"] = round(alone[p["pid"]]["pss"]) if alone else None
            p["Private_alone"] = round(alone[p["pid"]]["private"]) if alone else None
        total = {k: sum(p[k] for p in processes) for k in FIELDS}
        return {
            "server": interface,
            "config": config,
            "env": CONFIGS[config],
            "requests": requests + 1,
            "concurrency": clients,
            "processes": processes,
            "total": total,
            "pss_mb": round(total["Pss"] / 1024, 1),
            "alone_pss_mb": round(sum(p["Pss_alone"] for p in processes) / 1024, 1) if alone else None,
            "metrics_ok": "edgeservers_inference_seconds_count" in prometheus,
            "cold_start_s": round(server.ready_s or 0, 2),
            "detail": {named[pid]: rows for pid, rows in detail(list(named), top).items()} if top else {},
        }
    finally:
        server.stop()


class PeakPss:
    """Samples the PSS of the process tree under `pid` in a thread (bounded by `limit_s`)."""

    def __init__(self, pid: int, interval: float = 0.05, limit_s: float = 300.0):
        self.pid, self.interval, self.limit_s = pid, interval, limit_s
        self.before = tree_memory(pid)["pss_mb"]
        self.peak = self.before
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        deadline = time.monotonic() + self.limit_s
        while not self._stop.is_set() and time.monotonic() < deadline:
            self.peak = max(self.peak, tree_memory(self.pid)["pss_mb"])
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakPss:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(5)
        self.peak = max(self.peak, tree_memory(self.pid)["pss_mb"])

    @property
    def growth(self) -> float:
        return round(self.peak - self.before, 1)
