"""Graceful shutdown: SIGTERM to the whole process group (what tini does when the pod stops) while
clients predict. Every request the server received is answered 200; later ones find the port closed
(a clean refusal, nothing sent); the server exits 0 within its graceful_timeout. A client connected at
the SIGTERM whose request follows a moment later is answered too."""

from __future__ import annotations

import http.client
import os
import signal
import socket
import time

import pytest

from tests.support.clients import ModelServer
from tests.support.hostile import CHART_ENV, normal_body, post_head, sigterm_under_load
from tests.support.paths import MOBILENET_V2


# One REST worker (the chart's) is served by the main process itself; two run under gunicorn's arbiter;
# a gRPC worker beside them also stops on the group's SIGTERM, which is not a crash.
@pytest.mark.parametrize("workers,grpc_workers", [("1", "0"), ("2", "0"), ("1", "1")])
def test_sigterm_under_load_loses_no_request_and_exits_0(workers, grpc_workers):
    # metrics_interval=0: every request hands its metrics to Seldon's Manager process, which must not die
    # first on the group's SIGTERM and fail the requests in flight with 500 "Broken pipe".
    env = {**CHART_ENV, "GUNICORN_WORKERS": workers, "GRPC_WORKERS": grpc_workers}
    server = ModelServer("TFLiteServer", env, model_uri=str(MOBILENET_V2), metrics_interval=0.0).start()
    try:
        result = sigterm_under_load(server.pid, server.http_port, normal_body(), clients=4, load_s=2.0, limit_s=60)
        exit_code = server.proc.wait(timeout=30)
    finally:
        server.stop()
    counts = result["counts"]
    assert set(counts) <= {"200", "refused"}, counts
    assert counts.get("200", 0) >= 4
    term = result["term_at"]
    in_flight = [o for o in result["outcomes"] if o[1] < term < o[2]]
    assert in_flight and all(kind == "200" for kind, _, _ in in_flight), in_flight
    assert exit_code == 0


def test_a_request_sent_just_after_the_sigterm_on_an_open_connection_is_answered():
    """A client connected before the SIGTERM sends its request half a second later (a loaded node's
    scheduling delay between connect and send): answered 200 with `Connection: close`, not reset. A
    second connection that never sends holds the stop for IDLE_GRACE only, not the graceful_timeout."""
    server = ModelServer("TFLiteServer", CHART_ENV, model_uri=str(MOBILENET_V2), graceful_timeout=120.0).start()
    body = normal_body()
    try:
        with (
            socket.create_connection(("127.0.0.1", server.http_port)) as late,
            socket.create_connection(("127.0.0.1", server.http_port)),
        ):
            time.sleep(0.2)  # both accepted by the worker
            os.killpg(server.pid, signal.SIGTERM)
            time.sleep(0.5)
            late.sendall(post_head("/api/v1.0/predictions", "application/json", len(body)) + body)
            response = http.client.HTTPResponse(late)
            response.begin()
            assert (response.status, response.getheader("Connection")) == (200, "close")
            assert b"macaw" in response.read()
            assert server.proc.wait(timeout=30) == 0  # well before graceful_timeout=120
    finally:
        server.stop()


def test_an_idle_server_with_grpc_exits_0_on_sigterm():
    """The gRPC worker ends as the group's SIGTERM asks, often before the main process has seen its own:
    the supervisor takes that as the stop it is, not as a part that crashed (exit 1)."""
    server = ModelServer("TFLiteServer", {**CHART_ENV, "GRPC_WORKERS": "1"}, model_uri=str(MOBILENET_V2)).start()
    try:
        os.killpg(server.pid, signal.SIGTERM)
        assert server.proc.wait(timeout=30) == 0
        assert "stopping the whole server" not in server.stderr_after_exit()
    finally:
        server.stop()
