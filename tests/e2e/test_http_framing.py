"""The REST worker's reading of request heads, against a real server with the chart's settings: every head
that is malformed or ambiguous about its framing gets exactly one answer (400, or 413 for a length over the
limit) and its connection closed; a few thousand generated ones each get at most one; and through all of
it the worker's bookkeeping stays right, which the stop shows: SIGTERM exits 0 at once, "0 unanswered"
(a request counted in and never out would hold it for the whole graceful_timeout)."""

from __future__ import annotations

import json
import os
import random
import re
import signal
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.support import amplify
from tests.support.clients import ModelServer
from tests.support.harness import Microservice
from tests.support.hostile import CHART_ENV, normal_body, predict
from tests.support.paths import MOBILENET_V2

SEED, COUNT = 24, 3000


@pytest.fixture(scope="module")
def server():
    server = ModelServer("TFLiteServer", dict(CHART_ENV), model_uri=str(MOBILENET_V2)).start()
    yield server
    server.stop()


def exchange(port: int, data: bytes, timeout: float = 10.0, half_close: bool = False) -> list[int]:
    """Send `data` and read until the server closes: the statuses of the answers. With `half_close` the
    sending side is closed at once (a head the server is still waiting on ends there; tornado then takes
    the connection as gone, so a request the app was still working on gets no answer)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        try:
            s.sendall(data)
            if half_close:
                s.shutdown(socket.SHUT_WR)
        except OSError:  # the server answered and closed while the head was still being sent
            pass
        received = b""
        try:
            while chunk := s.recv(65536):
                received += chunk
        except OSError:
            pass
    return statuses(received)


def statuses(data: bytes) -> list[int]:
    """The status of each HTTP response in `data`, one after the other (bodies skipped by Content-Length)."""
    found = []
    while data.startswith(b"HTTP/1."):
        head_end = data.find(b"\r\n\r\n")
        if head_end < 0:
            head_end = len(data)
        head = data[:head_end].split(b"\r\n")
        found.append(int(head[0].split(b" ")[1]))
        length = 0
        for line in head[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        data = data[head_end + 4 + length :]
    return found


GOOD = b"GET /health/ping HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
POST = b"POST /api/v1.0/predictions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
MALFORMED = {
    "no Host on HTTP/1.1": (b"GET /health/ping HTTP/1.1\r\n\r\n", 400),
    "two Host headers": (b"GET /health/ping HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
    "Content-Length not ASCII digits": (POST + b"Content-Length: \xb2\r\n\r\n", 400),
    "Content-Length with a sign": (POST + b"Content-Length: +5\r\n\r\nhello", 400),
    "two Content-Length values": (POST + b"Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!", 400),
    "a Content-Length list": (POST + b"Content-Length: 5, 5\r\n\r\nhello", 400),
    "Content-Length of 2^64": (POST + b"Content-Length: 18446744073709551616\r\n\r\n", 413),
    "Content-Length and chunked": (
        POST + b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        400,
    ),
    "chunked on HTTP/1.0": (  # a prediction tornado would read and answer 200
        b"POST /api/v1.0/predictions HTTP/1.0\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        + b"%x\r\n%s\r\n0\r\n\r\n" % (len(normal_body()), normal_body()),
        400,
    ),
    "a transfer coding other than chunked": (POST + b"Transfer-Encoding: gzip, chunked\r\n\r\n", 400),
    "a bare LF ending a header line": (b"GET /health/ping HTTP/1.1\nHost: 127.0.0.1\r\n\r\n", 400),
}


@pytest.mark.parametrize("name", MALFORMED)
def test_a_malformed_head_gets_one_400_and_the_connection_closed(server, name):
    data, status = MALFORMED[name]
    assert exchange(server.http_port, data) == [status]


def test_inference_header_content_length_is_digits_only(server):
    """Its length with underscores between the digits, which Python's int() would read as the length."""
    body = json.dumps({"inputs": [amplify.image_input()]}).encode()
    head = (
        b"POST /v2/models/mobilenet_v2_1.0_224_quant/infer HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        b"Content-Type: application/octet-stream\r\nInference-Header-Content-Length: %s\r\n"
        b"Content-Length: %d\r\n\r\n" % ("_".join(str(len(body))).encode(), len(body))
    )
    assert exchange(server.http_port, head + body) == [400]


def final(statuses: list[int]) -> list[int]:
    """The answers among `statuses` (a 1xx is an interim response, e.g. 100 Continue)."""
    return [s for s in statuses if s >= 200]


def requests_in(data: bytes) -> int:
    """How many request heads `data` can hold at most: a mutation may end a head early (an empty line),
    and what follows is then read as a request of its own."""
    return max(1, len(re.findall(rb"\r?\n\r?\n", data)))


def mutate(rng: random.Random, head: bytes) -> bytes:
    """One to three random edits of a request head: bytes replaced, inserted or cut, lines doubled or dropped,
    line ends bared, versions and framing headers changed."""
    data = bytearray(head)
    noise = [b"\n", b"\r", b"\r\n", b"\0", b"\xb2", b" ", b":", b",", b"\t", b"-1", b"99999999999999999999"]
    for _ in range(rng.randint(1, 3)):
        at = rng.randrange(len(data) + 1)
        edit = rng.randrange(8)
        if edit == 0 and data:
            data[min(at, len(data) - 1)] = rng.randrange(256)
        elif edit == 1:
            data[at:at] = rng.choice(noise)
        elif edit == 2:
            del data[at : at + rng.randint(1, 8)]
        elif edit == 3:
            lines = bytes(data).split(b"\r\n")
            i = rng.randrange(len(lines))
            lines.insert(i, lines[i])
            data = bytearray(b"\r\n".join(lines))
        elif edit == 4:
            lines = bytes(data).split(b"\r\n")
            del lines[rng.randrange(len(lines))]
            data = bytearray(b"\r\n".join(lines))
        elif edit == 5:
            data = bytearray(bytes(data).replace(b"\r\n", b"\n", 1))
        elif edit == 6:
            data = bytearray(bytes(data).replace(b"HTTP/1.1", rng.choice([b"HTTP/1.0", b"HTTP/2.0", b"HTTP/1.1 "]), 1))
        else:
            extra = rng.choice(
                [
                    b"Transfer-Encoding: chunked\r\n",
                    b"Content-Length: %d\r\n" % rng.choice([0, 5, 2**63, 2**64]),
                    b"Content-Length: 0, 1\r\n",
                    b"Host: a\r\n",
                    b"Expect: 100-continue\r\n",
                ]
            )
            data = bytearray(bytes(data).replace(b"\r\n", b"\r\n" + extra, 1))
    return bytes(data)


def test_thousands_of_generated_heads_each_get_at_most_one_answer_and_the_stop_is_prompt():
    """Mutations of bodiless heads that ask to close: whatever the server makes of each, it answers each
    request in them at most once. Then a normal prediction, then SIGTERM: exit 0 within a second or two, nothing unanswered.
    (Its stderr goes to a file: a line per refusal would fill a pipe nobody reads until the end.)"""
    server = Microservice("TFLiteServer", {"model_uri": str(MOBILENET_V2)}, dict(CHART_ENV)).start()
    try:
        rng = random.Random(SEED)
        templates = [
            GOOD,
            POST + b"Content-Length: 0\r\nConnection: close\r\n\r\n",
            b"POST /v2/models/mobilenet_v2_1.0_224_quant/infer HTTP/1.1\r\nHost: h\r\n"
            b"Inference-Header-Content-Length: 0\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        ]
        heads = [mutate(rng, rng.choice(templates)) for _ in range(COUNT)]
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda head: exchange(server.http_port, head, half_close=True), heads))
        over = [(head, got) for head, got in zip(heads, answers) if len(final(got)) > requests_in(head)]
        assert not over, over[:5]
        assert sum(len(final(a)) == 1 for a in answers) > COUNT // 2  # most were answered at all
        assert predict(server.http_port, normal_body(), timeout=30)[0] == 200
        start = time.monotonic()
        os.killpg(server.proc.pid, signal.SIGTERM)
        assert server.proc.wait(timeout=30) == 0
        stopped_in = time.monotonic() - start
        log = server.stderr_tail(1 << 20)
    finally:
        server.stop()
    assert stopped_in < 5.0, stopped_in  # well below graceful_timeout (20 s), which an uncounted request would take
    assert " 0 unanswered" in log, log[-2000:]
