"""What hostile REST clients (tests/support/hostile.py) cost a server: per case the status, the answer time, the
peak PSS of the process tree, and whether a normal prediction still succeeds; TFLiteServer with the chart's
settings. docs/security.md holds the table this prints.

    .venv/bin/python -m bench.hostile            # one JSON row per case
    .venv/bin/python -m bench.hostile ROOT       # the same clients against another checkout (e.g. before a change)
"""

from __future__ import annotations

import functools
import sys
import time
from collections.abc import Callable
from typing import Any

from bench.launcher import Server, print_rows
from tests.support.hostile import (
    CHART_ENV,
    Reply,
    Slowloris,
    chunked,
    json_b64,
    json_ndarray,
    multipart_crafted,
    multipart_fields,
    multipart_file,
    normal_body,
    open_idle,
    post_head,
    predict,
    raw_request,
    sigterm_under_load,
)
from tests.support.memory import PeakPss
from tests.support.paths import MOBILENET_V2

PREDICT = "/api/v1.0/predictions"


def predictions_while(
    port: int, count: int, body: bytes, timeout: float = 10.0, pause: float = 0.2
) -> list[tuple[int | None, float, str]]:
    out = []
    for _ in range(count):
        out.append(predict(port, body, timeout))
        time.sleep(pause)
    return out


def _start(env: dict[str, str] | None = None) -> Server:
    body = normal_body()
    server = Server("TFLiteServer", {"model_uri": str(MOBILENET_V2)}, env={**CHART_ENV, **(env or {})}, loopback=True)
    return server.start(lambda s: predict(s.http_port, body, 5)[0] == 200)


def table(big: int = 300 << 20, multipart: int = 150 << 20) -> list[dict[str, Any]]:
    body = normal_body()
    rows: list[dict[str, Any]] = []
    server = _start()
    port, pid = server.http_port, server.pid
    try:

        def row(name: str, fn: Callable[[], Reply]) -> None:
            with PeakPss(pid) as mem:
                reply = fn()
            after = predict(port, body)
            info = reply.body[:160].decode(errors="replace")
            rows.append(
                {
                    "case": name,
                    "status": reply.status,
                    "s": round(reply.seconds, 2),
                    "pss_before": mem.before,
                    "pss_peak": mem.peak,
                    "growth": mem.growth,
                    "next_ok": after[0] == 200,
                    "info": info or reply.error,
                }
            )

        for name, make, total in (
            ("JSON binData (Content-Length)", json_b64, big),
            ("JSON ndarray (Content-Length)", json_ndarray, big // 8),
        ):
            ct, chunks = make(total)
            row(
                f"{name} {total >> 20} MiB", functools.partial(raw_request, port, post_head(PREDICT, ct, total), chunks)
            )
        ct, chunks = json_b64(big)
        row(
            f"JSON binData chunked {big >> 20} MiB",
            lambda: raw_request(port, post_head(PREDICT, ct, None), chunked(chunks)),
        )
        ct, chunks = multipart_file(multipart)
        row(
            f"multipart file {multipart >> 20} MiB",
            lambda: raw_request(port, post_head(PREDICT, ct, multipart), chunks),
        )
        ct, chunks = multipart_crafted(15 << 20)
        row(
            "multipart crafted part 15 MiB (CVE-2023-46136)",
            lambda: raw_request(port, post_head(PREDICT, ct, 15 << 20), chunks),
        )
        ct, flood = multipart_fields({f"f{i}": "1" for i in range(5000)})
        row(
            "multipart 5000 fields",
            lambda: raw_request(port, post_head(PREDICT, ct, len(flood)), [flood]),
        )
        ct, nested = multipart_fields({"data": "[" * 100_000 + "]" * 100_000})
        row(
            "multipart nested JSON field",
            lambda: raw_request(port, post_head(PREDICT, ct, len(nested)), [nested]),
        )
        ct, chunks = json_ndarray(15 << 20)
        row(
            "JSON ndarray 15 MiB (under the limit)",
            lambda: raw_request(port, post_head(PREDICT, ct, 15 << 20), chunks),
        )
        for label, count in (("idle sockets", 300),):
            held = open_idle(port, count)
            start = time.monotonic()
            results = predictions_while(port, 5, body, timeout=10)
            rows.append(
                {
                    "case": f"{len(held)} {label}",
                    "answered": f"{sum(r[0] == 200 for r in results)}/5",
                    "s": round(time.monotonic() - start, 2),
                    "max_s": round(max(r[1] for r in results), 2),
                }
            )
            for s in held:
                s.close()
        with Slowloris(port, 50, limit_s=60):
            time.sleep(2)
            start = time.monotonic()
            results = predictions_while(port, 5, body, timeout=10)
        rows.append(
            {
                "case": "50 slowloris",
                "answered": f"{sum(r[0] == 200 for r in results)}/5",
                "s": round(time.monotonic() - start, 2),
                "max_s": round(max(r[1] for r in results), 2),
            }
        )
    finally:
        server.stop()
    server = _start()
    result = sigterm_under_load(server.pid, server.http_port, body)
    assert server.proc is not None
    rows.append({"case": "SIGTERM under load (4 clients)", "counts": result["counts"], "exit": server.proc.wait(60)})
    server.stop()
    return rows


if __name__ == "__main__":
    print_rows(table, sys.argv)
