"""Where the memory of a running server goes: PSS, private (USS) and shared memory per process of its tree.

    .venv/bin/python -m bench.memory                       # TFLiteServer, chart defaults and GUNICORN_THREADS=8
    .venv/bin/python -m bench.memory --server OpenVINOServer --config defaults
    .venv/bin/python -m bench.memory --json                # one JSON object per configuration

Each configuration starts the real `seldon-core-microservice` (bench/launcher.py's Server) with
models/mobilenet_v2_quant and nothing but `model_uri` set, sends `--requests` REST `binData`
predictions of images/parrot.jpg (multipart, as the README's curl; 8 clients at once for
GUNICORN_THREADS=8, so that every thread has worked), reads /health/status and the
Prometheus endpoint once, and then reads /proc/<pid>/smaps_rollup of every process in the tree.
Each process is named by its role, found from the listening sockets it holds and its place in the tree
(the wrapper's main process was the REST gunicorn arbiter; edgeservers' serves REST itself when it has one worker). Memory, not time, is measured here:
it does not depend on the machine's load.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from bench.launcher import ROOT, Server, process_tree

from harness import children, socket_inodes

MODEL = ROOT / "models" / "mobilenet_v2_quant"
IMAGE = ROOT / "images" / "parrot.jpg"

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
    pages = {pid: _present_pages(pid) for pid in pids}
    if any(p is None for p in pages.values()):
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


def roles(server: Server) -> dict[int, str]:
    """pid -> role in the wrapper's tree, from the ports each process listens on."""
    assert server.proc is not None
    root = server.proc.pid
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


def _post_image(server: Server, jpeg: bytes) -> dict:
    boundary = uuid.uuid4().hex
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="binData"; filename="parrot.jpg"\r\n'
            f"Content-Type: image/jpeg\r\n\r\n"
        ).encode()
        + jpeg
        + f"\r\n--{boundary}--\r\n".encode()
    )
    request = urllib.request.Request(
        server.url, data=body, headers={"Content-Type": f"multipart/form-data; boundary={boundary}"}
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=60) as response:
        return response.read().decode()


def _first_prediction(server: Server) -> bool:
    answer = _post_image(server, IMAGE.read_bytes())
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
    server = Server(
        interface,
        {"model_uri": str(MODEL)},
        {**CONFIGS[config], "PYTHONPATH": str(ROOT / "tests" / "loopback"), **(env or {})},
    )
    server.start(_first_prediction)
    try:
        jpeg = IMAGE.read_bytes()
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
        processes = [{"pid": pid, "role": role, **smaps_rollup(pid)} for pid, role in named.items()]
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
            "metrics_ok": "edgeservers_inference_ms_count" in prometheus,
            "cold_start_s": round(server.cold_start_s or 0, 2),
            "detail": {named[pid]: rows for pid, rows in detail(list(named), top).items()} if top else {},
        }
    finally:
        server.stop()


def _mb(kb: int) -> str:
    return f"{kb / 1024:.1f}"


def table(result: dict[str, Any]) -> str:
    env = " ".join(f"{k}={v}" for k, v in result["env"].items())
    lines = [
        f"{result['server']}, {result['config']} ({env}), mobilenet_v2_quant, after {result['requests']} "
        f"REST binData predictions ({result['concurrency']} at once); "
        f"metrics on Prometheus: {'yes' if result['metrics_ok'] else 'NO'}",
        "",
        "| process | PSS alone MB | private in tree MB | PSS MB | USS MB | shared MB | RSS MB | PSS anon / file MB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]

    def alone(kb: int | None) -> str:
        return "n/a" if kb is None else _mb(kb)

    for p in sorted(result["processes"], key=lambda p: -(p["Pss_alone"] or p["Pss"])):
        uss = p["Private_Clean"] + p["Private_Dirty"]
        shared = p["Shared_Clean"] + p["Shared_Dirty"]
        lines.append(
            f"| {p['role']} | {alone(p['Pss_alone'])} | {alone(p['Private_alone'])} | {_mb(p['Pss'])} | {_mb(uss)} "
            f"| {_mb(shared)} | {_mb(p['Rss'])} | {_mb(p['Pss_Anon'])} / {_mb(p['Pss_File'])} |"
        )
    t = result["total"]
    alone_total = None if result["alone_pss_mb"] is None else sum(p["Pss_alone"] for p in result["processes"])
    private_total = None if alone_total is None else sum(p["Private_alone"] for p in result["processes"])
    lines.append(
        f"| **tree ({len(result['processes'])} processes)** | **{alone(alone_total)}** | {alone(private_total)} "
        f"| **{_mb(t['Pss'])}** | {_mb(t['Private_Clean'] + t['Private_Dirty'])} | | {_mb(t['Rss'])} "
        f"| {_mb(t['Pss_Anon'])} / {_mb(t['Pss_File'])} |"
    )
    for role, rows in result.get("detail", {}).items():
        lines += ["", f"{role}: mapping, PSS alone kB, private in tree kB"]
        lines += [f"    {name:70s} {pss:8.0f} {private:8.0f}" for name, pss, private in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", choices=["TFLiteServer", "OpenVINOServer"], action="append")
    parser.add_argument("--config", choices=sorted(CONFIGS), action="append")
    parser.add_argument("--requests", type=int, default=40)
    parser.add_argument("--env", action="append", default=[], help="NAME=VALUE added to the server's environment")
    parser.add_argument("--detail", type=int, default=0, help="show the N largest mappings of each process")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    env = dict(item.split("=", 1) for item in args.env)
    for interface in args.server or ["TFLiteServer"]:
        for config in args.config or ["defaults", "threads8"]:
            result = measure(interface, config, min(max(args.requests, 0), 1000), env=env, top=args.detail)
            print(json.dumps(result) if args.json else table(result) + "\n", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
