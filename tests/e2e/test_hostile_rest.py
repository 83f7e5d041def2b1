"""Hostile REST connections and bodies, with the chart's worker settings (1 REST worker, 1 thread, gRPC off).
A normal client keeps getting answers; each limit answers 4xx naming what arrived, the limit and its
parameter, before the body is kept; the peak PSS of the process tree grows by less than 100 MB
(tests/unit/test_rest_app.py parses multipart bodies in-process)."""

from __future__ import annotations

import http.client
import socket
import time

import pytest
import requests

from tests.support.clients import ModelServer
from tests.support.harness import free_port, listening_hosts, stop_process_group
from tests.support.hostile import (
    CHART_ENV,
    Slowloris,
    chunked,
    json_b64,
    json_ndarray,
    multipart_fields,
    multipart_file,
    normal_body,
    open_idle,
    ping,
    post_head,
    predict,
    raw_request,
)
from tests.support.memory import PeakPss
from tests.support.paths import MOBILENET_V2, ROOT, image_bytes

PREDICT = "/api/v1.0/predictions"
LIMIT = 16 << 20  # max_request_bytes' default
GROWTH_MB = 100


@pytest.fixture(scope="module")
def chart_server():
    server = ModelServer("TFLiteServer", dict(CHART_ENV), model_uri=str(MOBILENET_V2)).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def body() -> bytes:
    return normal_body()


def assert_still_serving(server: ModelServer, body: bytes) -> None:
    assert server.alive()
    status, _, error = predict(server.http_port, body, timeout=30)
    assert status == 200, error


# --- 1. connections ---------------------------------------------------------------------------------


def test_idle_and_slowloris_connections_do_not_stop_predictions(chart_server, body):
    port = chart_server.http_port
    held = open_idle(port, 300)
    try:
        assert len(held) == 300
        with Slowloris(port, 50, period=1.0, limit_s=90):
            time.sleep(1.5)  # both kinds in place
            results = [predict(port, body, timeout=10) for _ in range(10)]
            pings = [ping(port) for _ in range(5)]
    finally:
        for s in held:
            s.close()
    assert [r[0] for r in results] == [200] * 10, [r[2] for r in results]
    assert pings == [200] * 5


def test_a_silent_connection_is_closed_after_the_header_timeout(chart_server):
    with socket.create_connection(("127.0.0.1", chart_server.http_port), timeout=30) as s:
        s.sendall(b"POST /api/v1.0/predictions HTTP/1.1\r\nHost: x\r\n")  # ... and never the rest
        # closed by the server (header_timeout, 10 s by default); without it recv times out (30 s) and fails
        assert s.recv(1024) == b""


def test_oversize_headers_end_the_connection(chart_server, body):
    with socket.create_connection(("127.0.0.1", chart_server.http_port), timeout=30) as s:
        s.sendall(b"GET /health/ping HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (200 << 10) + b"\r\n\r\n")
        try:
            answer = s.recv(1024)
        except ConnectionResetError:
            answer = b""
    assert answer == b"" or answer.startswith(b"HTTP/1.1 4"), answer
    assert_still_serving(chart_server, body)


def test_connections_above_the_cap_are_refused_and_the_rest_still_served(chart_server, body):
    port = chart_server.http_port
    held = open_idle(port, 1000)  # max_connections' default
    try:
        assert len(held) == 1000
        time.sleep(0.5)
        with socket.create_connection(("127.0.0.1", port), timeout=10) as extra:
            reply = extra.recv(4096)
        assert reply.startswith(b"HTTP/1.1 503"), reply
        assert b"max_connections" in reply and b"1000" in reply
    finally:
        for s in held:
            s.close()
    deadline = time.monotonic() + 10
    while predict(port, body, timeout=10)[0] != 200 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert_still_serving(chart_server, body)


# --- 2. limits before work ----------------------------------------------------------------------------


def _oversize(kind: str):
    if kind == "json content-length 300 MB":
        content_type, chunks = json_b64(300 << 20)
        return post_head(PREDICT, content_type, 300 << 20), chunks, "314572800 bytes"
    if kind == "json chunked 300 MB":
        content_type, chunks = json_b64(300 << 20)
        return post_head(PREDICT, content_type, None), chunked(chunks), f"more than {LIMIT} bytes (chunked)"
    if kind == "multipart 150 MB":
        content_type, chunks = multipart_file(150 << 20)
        return post_head(PREDICT, content_type, 150 << 20), chunks, "157286400 bytes"
    if kind == "curl-style Expect: 100-continue":
        content_type, chunks = json_b64(300 << 20)
        return post_head(PREDICT, content_type, 300 << 20, "Expect: 100-continue\r\n"), iter([]), "314572800 bytes"
    raise AssertionError(kind)


@pytest.mark.parametrize(
    "kind", ["json content-length 300 MB", "json chunked 300 MB", "multipart 150 MB", "curl-style Expect: 100-continue"]
)
def test_an_oversize_body_answers_413_without_being_kept(chart_server, body, kind):
    head, chunks, what = _oversize(kind)
    with PeakPss(chart_server.pid) as memory:
        reply = raw_request(chart_server.http_port, head, chunks, timeout=60)
    assert reply.status == 413, (reply, reply.error)
    info = reply.json()["status"]["info"]
    assert what in info and "max_request_bytes" in info and str(LIMIT) in info, info
    assert reply.sent < 100 << 20, "the server should answer before the client has sent most of the body"
    assert memory.growth < GROWTH_MB, memory.growth
    assert_still_serving(chart_server, body)


def test_a_json_body_with_too_many_values_is_refused_before_parsing(chart_server, body):
    content_type, chunks = json_ndarray(15 << 20)  # under max_request_bytes: ~7.8 million numbers
    with PeakPss(chart_server.pid) as memory:
        reply = raw_request(chart_server.http_port, post_head(PREDICT, content_type, 15 << 20), chunks)
    assert reply.status == 413, reply
    info = reply.json()["status"]["info"]
    assert "JSON values" in info and "305152" in info, info  # 2 x 224 x 224 x 3 + 4096
    assert memory.growth < GROWTH_MB, memory.growth
    assert_still_serving(chart_server, body)


def test_a_model_sized_ndarray_is_still_accepted(chart_server):
    import numpy as np

    reply = chart_server.rest({"data": {"ndarray": np.zeros((1, 224, 224, 3), np.uint8).tolist()}})
    assert reply.status_code == 200, reply.text


FORM_CASES = {
    "5000 form fields": ({f"f{i}": "1" for i in range(5000)}, 413, ["at most 16 parts", "max_request_bytes"]),
    "20 form fields": ({f"f{i}": "1" for i in range(20)}, 413, ["at most 16 parts"]),  # Werkzeug's own cap is 1000
    "deeply nested JSON field": ({"data": "[" * 100_000 + "]" * 100_000}, 400, ["not valid JSON", "RecursionError"]),
    "invalid JSON field": ({"data": "{not json"}, 400, ["not valid JSON"]),
    "huge integer in a JSON field": ({"data": "1" * 10_000}, 400, ["not valid JSON"]),
    "too many values in a form field": ({"data": "[" + "0," * 400_000 + "0]"}, 413, ["JSON values", "305152"]),
}


@pytest.mark.parametrize("case", sorted(FORM_CASES))
def test_hostile_form_fields_answer_4xx_with_a_message(chart_server, body, case):
    fields, code, words = FORM_CASES[case]
    content_type, data = multipart_fields(fields)
    reply = raw_request(chart_server.http_port, post_head(PREDICT, content_type, len(data)), [data])
    assert reply.status == code, reply
    info = reply.json()["status"]["info"]
    for word in words:
        assert word in info, info
    assert_still_serving(chart_server, body)


@pytest.mark.parametrize("content_type", ["application/json", "multipart"])
def test_a_chunked_request_under_the_limit_is_read_whole(chart_server, body, content_type):
    """A body without Content-Length (Transfer-Encoding: chunked) reaches the app whole (not empty: 400
    "Can't find JSON in data")."""
    if content_type == "multipart":
        from urllib3 import encode_multipart_formdata

        data, content_type = encode_multipart_formdata({"binData": ("parrot.jpg", image_bytes("parrot.jpg"))})
    else:
        data = body
    pieces = [data[i : i + 100_000] for i in range(0, len(data), 100_000)]
    reply = raw_request(chart_server.http_port, post_head(PREDICT, content_type, None), chunked(pieces), timeout=60)
    assert reply.status == 200, reply
    assert b'"macaw"' in reply.body


def test_a_multipart_jpeg_upload_still_predicts(chart_server):
    reply = requests.post(
        chart_server.url + PREDICT, files={"binData": ("parrot.jpg", image_bytes("parrot.jpg"))}, timeout=30
    )
    assert reply.status_code == 200, reply.text
    assert reply.json()["jsonData"][0]["label"] == "macaw"


# --- 6. exposure ------------------------------------------------------------------------------------------


def test_cors_is_off_by_default(chart_server):
    for method in ("GET", "OPTIONS"):
        reply = requests.request(
            method,
            chart_server.url + "/health/ping",
            timeout=10,
            headers={"Origin": "http://elsewhere.example", "Access-Control-Request-Method": "POST"},
        )
        assert "Access-Control-Allow-Origin" not in reply.headers, reply.headers


LOOPBACK = {"127.0.0.1", "::ffff:127.0.0.1"}  # gRPC's C core listens on IPv4 loopback through an IPv6 socket


def _on_loopback_only(port: int) -> bool:
    hosts = listening_hosts(port)
    return bool(hosts) and hosts <= LOOPBACK


def test_bind_address_and_cors_origins():
    """bind_address=127.0.0.1 (without the tests' loopback shim) puts REST and metrics on loopback only;
    cors_origins lets just the listed origins through."""
    server = ModelServer(
        "TFLiteServer",
        {**CHART_ENV, "PYTHONPATH": ""},
        model_uri=str(MOBILENET_V2),
        bind_address="127.0.0.1",
        cors_origins="http://camera.example",
    ).start()
    try:
        assert _on_loopback_only(server.http_port), listening_hosts(server.http_port)
        assert _on_loopback_only(server.metrics_port), listening_hosts(server.metrics_port)
        allowed = requests.get(server.url + "/health/ping", headers={"Origin": "http://camera.example"}, timeout=10)
        assert allowed.headers.get("Access-Control-Allow-Origin") == "http://camera.example"
        other = requests.get(server.url + "/health/ping", headers={"Origin": "http://elsewhere.example"}, timeout=10)
        assert "Access-Control-Allow-Origin" not in other.headers
    finally:
        server.stop()


def test_a_request_on_a_kept_alive_connection_is_answered(chart_server, body):
    conn = http.client.HTTPConnection("127.0.0.1", chart_server.http_port, timeout=30)
    try:
        for _ in range(3):
            conn.request("POST", PREDICT, body, {"Content-Type": "application/json"})
            response = conn.getresponse()
            response.read()
            assert response.status == 200
    finally:
        conn.close()


def test_make_serve_puts_rest_grpc_and_metrics_on_loopback():
    """The Makefile's claim: `make serve` (its real command, from `make -n`) serves REST, gRPC and metrics on 127.0.0.1."""
    import os
    import subprocess

    rest, grpc_port, metrics = free_port(), free_port(), free_port()
    dry = subprocess.run(
        ["make", "-n", "serve", f"REST_PORT={rest}", f"GRPC_PORT={grpc_port}", f"METRICS_PORT={metrics}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    command = dry[dry.rfind("\n", 0, dry.index("-m edgeservers.local_serve")) + 1 :]  # serve's own recipe
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # no loopback shim: the real binding
    proc = subprocess.Popen(
        ["bash", "-c", command],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 90
        while ping(rest, timeout=1) != 200 or not listening_hosts(grpc_port):
            assert proc.poll() is None and time.monotonic() < deadline, "make serve did not come up"
            time.sleep(0.3)
        assert _on_loopback_only(rest), listening_hosts(rest)
        assert _on_loopback_only(grpc_port), listening_hosts(grpc_port)
        assert _on_loopback_only(metrics), listening_hosts(metrics)
    finally:
        stop_process_group(proc, timeout=20)
