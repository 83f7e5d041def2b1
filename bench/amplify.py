"""Small requests that ask for much more work than they weigh (tests/support/amplify.py builds them), and what
each costs the server: status, seconds, peak PSS growth of the process tree, and how long a normal prediction
sent meanwhile waited.

    .venv/bin/python -m bench.amplify            # the table, with the chart's settings
    .venv/bin/python -m bench.amplify ROOT       # the same clients against another checkout (e.g. before a change)

The servers run with the chart's settings (one REST worker, one thread; GRPC_WORKERS=1 where gRPC is
used) and a real S3 (moto) for images by reference and uncertain uploads. Every case is bounded in
time; traffic stays on 127.0.0.1. docs/security.md holds the table this prints.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from bench.launcher import Server, print_rows
from tests.support.amplify import (
    BUCKET,
    grpc_call,
    grpc_repeated_outputs,
    grpc_typed_contents,
    header_bypass_inputs,
    header_bypass_numbers,
    image_store,
    infer_path,
    measured,
    notification,
    post,
    repeated_outputs,
    v1_grpc_ndarray,
)
from tests.support.hostile import CHART_ENV, normal_body, predict, raw_request
from tests.support.paths import MOBILENET_V2
from tests.support.services import BlackHole, S3Server, start_s3

# --- S3 --------------------------------------------------------------------------------------------------


@contextmanager
def s3() -> Iterator[S3Server]:
    """A moto S3 server on loopback with the bucket of images."""
    store = start_s3()
    try:
        image_store(store)
        store.put("retraining", {})
        yield store
    finally:
        store.server.stop()


def frames_uploaded(store: S3Server) -> int:
    """Uncertain images uploaded under a request_id frame-N."""
    listed = store.client.list_objects_v2(Bucket="retraining").get("Contents", [])
    return sum(1 for o in listed if "-frame-" in o["Key"] and not o["Key"].endswith(".json"))


# --- servers ---------------------------------------------------------------------------------------------


def start(env: dict[str, str] | None = None, grpc: bool = False, **params: Any) -> Server:
    body = normal_body()
    server = Server(
        "TFLiteServer",
        {"model_uri": str(MOBILENET_V2), **params},
        env={**CHART_ENV, **({"GRPC_WORKERS": "1"} if grpc else {}), **(env or {})},
    )
    return server.start(lambda s: predict(s.http_port, body, 5)[0] == 200)


def sigterm_exit(server: Server, before: Callable[[], None] = lambda: None) -> dict[str, Any]:
    """SIGTERM to the process group (as the kubelet's runtime sends it): exit code and seconds to exit."""
    assert server.proc is not None
    before()
    start = time.monotonic()
    os.killpg(server.proc.pid, signal.SIGTERM)
    code: int | str
    try:
        code = server.proc.wait(60)
    except Exception:
        code = "still running after 60 s"
    return {"exit": code, "s": round(time.monotonic() - start, 2)}


def no_host_request(port: int) -> Any:
    reply = raw_request(port, b"GET /health/ping HTTP/1.1\r\n\r\n", [], timeout=5)
    return reply.status if reply.status is not None else reply.error or "no answer"


# --- the table ----------------------------------------------------------------------------------------


def table() -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    with s3() as store:
        env = store.env
        server = start(env, grpc=True, image_store=f"s3://{BUCKET}/cam/")
        try:
            port = server.http_port
            rows.append(
                measured(
                    server,
                    "1. OIP REST: the output 10,000 times, classification 1001",
                    lambda: post(port, infer_path(), repeated_outputs(10_000, 1001)),
                )
            )
            rows.append(
                measured(
                    server,
                    "1. OIP gRPC: the output 2,000 times, classification 1001",
                    lambda: grpc_call(server, "ModelInfer", grpc_repeated_outputs(2_000, 1001)),
                )
            )
            rows.append(
                measured(
                    server,
                    "2. S3 notification: 2,000 records",
                    lambda: post(port, "/api/v1.0/predictions", notification(2_000)),
                )
            )
            rows.append(
                measured(
                    server,
                    "2. S3 notification: 300 records, the last missing",
                    lambda: post(port, "/api/v1.0/predictions", notification(300, missing_last=True)),
                )
            )
            for name, (body, headers) in (
                (
                    "4. OIP REST: 16 MB of numbers, with Inference-Header-Content-Length",
                    header_bypass_numbers((16 << 20) - 4096),
                ),
                ("4. OIP REST: 250,000 inputs, with Inference-Header-Content-Length", header_bypass_inputs(250_000)),
            ):
                rows.append(measured(server, name, functools.partial(post, port, infer_path(), body, headers)))
            for field in ("uint_contents", "bytes_contents", "fp32_contents"):
                request = grpc_typed_contents(field, 16_000_000)
                rows.append(
                    measured(
                        server,
                        f"5. OIP gRPC: 16 MB of {field}",
                        functools.partial(grpc_call, server, "ModelInfer", request),
                    )
                )
            rows.append(
                measured(
                    server,
                    "v1 gRPC: 15 MB data.ndarray of zeros",
                    functools.partial(grpc_call, server, "seldon.protos.Model/Predict", v1_grpc_ndarray(15_000_000)),
                )
            )
            with BlackHole() as hole:
                hanging = start(
                    {**env, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{hole.port}"}, image_store=f"s3://{BUCKET}/cam/"
                )
                try:
                    body = json.dumps({"jsonData": {"image_uri": f"s3://{BUCKET}/cam/parrot.jpg"}}).encode()
                    rows.append(
                        measured(
                            hanging,
                            "minor: image_uri with an S3 endpoint that accepts and never answers",
                            lambda: post(hanging.http_port, "/api/v1.0/predictions", body),
                        )
                    )
                finally:
                    hanging.stop()
        finally:
            server.stop()

        server = start(env, uncertain_store="s3://retraining/", confidence_threshold=1.0)
        try:
            body = json.loads(normal_body())
            poison = {**body, "meta": {"tags": {"request_id": "x" * 100_000}}}
            status = post(server.http_port, "/api/v1.0/predictions", json.dumps(poison).encode())[0]
            for i in range(40):
                frame = {**body, "meta": {"tags": {"request_id": f"frame-{i}"}}}
                post(server.http_port, "/api/v1.0/predictions", json.dumps(frame).encode())
            deadline = time.monotonic() + 30
            while frames_uploaded(store) < 40 and time.monotonic() < deadline:
                time.sleep(0.5)
            rows.append(
                {
                    "case": "3. a 100 KB request_id, then 40 uncertain predictions",
                    "status": status,
                    "uploaded_of_40_within_30s": frames_uploaded(store),
                }
            )
        finally:
            server.stop()

    server = start()
    rows.append(
        {
            "case": "6. a request without Host, then SIGTERM",
            "status": no_host_request(server.http_port),
            **sigterm_exit(server),
        }
    )
    server.stop()
    server = start(grpc=True)
    rows.append({"case": "7. SIGTERM with GRPC_WORKERS=1", **sigterm_exit(server)})
    server.stop()
    return rows


if __name__ == "__main__":
    print_rows(table, sys.argv)
