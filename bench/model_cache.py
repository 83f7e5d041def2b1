"""What the node-local model cache saves at a pod's start: bytes over the link, the start without the uplink, and a
download cut by the link resumed.

    .venv/bin/python -m bench.model_cache            # models/mobilenet_v2_quant as a .tar.gz on S3 (moto)
    .venv/bin/python -m bench.model_cache --json

The storage initializer runs as the chart's init container runs it (`python -m edgeservers.storage URI DEST
--cache-dir DIR`, a fresh DEST each time: a new pod on the same node), against S3 on loopback behind a TCP gate
that counts the bytes S3 sends (tests/support/services.py's Gate). Then TFLiteServer starts from DEST with the
chart's settings. Reported, each a pod start:

- first: no copy on the node, the object downloaded;
- unchanged: the object unchanged, the cached copy used (one listing crosses the link);
- offline: S3 stopped (a node rebooted without its uplink): the initializer's time, and from the server's
  process start to its first answer;
- cut, then resumed: a new object, its download cut half-way (the initializer fails, STORAGE_RETRIES=0), then
  the next start, which continues it with a ranged GET.
Time is measured here, never asserted (docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.launcher import ROOT, Server, answers_a_photo, print_result, run_from_checkout
from tests.support.hostile import CHART_ENV
from tests.support.services import Gate, S3Server, start_s3
from tests.support.updating import A, model_tar, swapped_classes

URI = "s3://models/model.tar.gz"


def _initializer(env: dict[str, str], dest: Path, cache: Path) -> dict[str, Any]:
    """One run of the initializer into `dest`: its exit code, time and line."""
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "edgeservers.storage", URI, str(dest), "--cache-dir", str(cache)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    line = (done.stdout or done.stderr).strip().splitlines()[-1:]
    return {"exit": done.returncode, "s": round(time.monotonic() - started, 2), "line": line[0] if line else ""}


def _through(gate: Gate, env: dict[str, str], dest: Path, cache: Path) -> dict[str, Any]:
    """One run of the initializer, with the bytes S3 sent through the gate meanwhile."""
    before = gate.bytes_to_clients
    result = _initializer(env, dest, cache)
    return {**result, "bytes_from_s3": gate.bytes_to_clients - before}


def _first_answer_s(dest: Path) -> float:
    """TFLiteServer from `dest`: seconds from its process start to its first prediction."""
    server = Server("TFLiteServer", {"model_uri": str(dest)}, CHART_ENV).start(answers_a_photo)
    try:
        return round(server.cold_start_s or 0.0, 2)
    finally:
        server.stop()


def run() -> dict[str, Any]:
    s3: S3Server = start_s3()
    gate = Gate(s3.server.get_host_and_port())
    work = Path(tempfile.mkdtemp(prefix="bench-cache-"))
    cache = work / "cache"
    env = {**os.environ, **s3.env, "AWS_ENDPOINT_URL": gate.url, "NO_PROXY": "127.0.0.1", "STORAGE_RETRIES": "0"}

    def start(pod: str) -> dict[str, Any]:  # a new pod on the node: a fresh model directory, the same cache
        return _through(gate, env, work / pod, cache)

    try:
        first_object = model_tar(A)
        s3.put("models", {"model.tar.gz": first_object})
        result: dict[str, Any] = {"object_bytes": len(first_object)}
        result["first"] = start("first")
        result["unchanged"] = start("unchanged")
        with s3.outage():
            offline = _initializer(env, work / "offline", cache)
            result["offline"] = {**offline, "server_first_answer_s": _first_answer_s(work / "offline")}
        second_object = model_tar(swapped_classes("macaw", "goldfish"))
        s3.put("models", {"model.tar.gz": second_object})
        gate.mode, gate.cut_after = "cut", len(second_object) // 2
        result["cut"] = start("cut")
        result["resumed"] = start("resumed")
        result["resumed"]["ranged_get"] = any("range: bytes=" in r.lower() for r in gate.requests[-3:])
        result["new_object_bytes"] = len(second_object)
    finally:
        gate.close()
        s3.server.stop()
        shutil.rmtree(work, ignore_errors=True)
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    result = run()
    print_result(result, args.json)


if __name__ == "__main__":
    run_from_checkout(main)
