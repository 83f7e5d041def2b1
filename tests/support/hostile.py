"""Hostile REST clients: raw requests sent a chunk at a time, oversize and malformed bodies, idle and slowloris
connections, SIGTERM under load. Every loop is bounded in count and time; traffic goes to 127.0.0.1 only.
Bodies are generated in chunks, never held whole by the client (bench/hostile.py measures what each costs).
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from tests.support.paths import image_bytes
from tests.support.payloads import closing, form_content_type, multipart, part_end, part_head, rest_image

CHUNK = 1 << 20
# The chart's default worker settings (charts/edge-model/values.yaml): 1 REST worker, 1 thread, gRPC off.
CHART_ENV = {"GUNICORN_WORKERS": "1", "GUNICORN_THREADS": "1", "GRPC_WORKERS": "0"}


# --- normal client -------------------------------------------------------------------------------


def normal_body() -> bytes:
    """A normal client's request: parrot.jpg as JSON binData."""
    return rest_image(image_bytes("parrot.jpg"))


def predict(port: int, body: bytes, timeout: float = 10.0) -> tuple[int | None, float, str]:
    """One normal prediction on a new connection: (status or None, seconds, error or '')."""
    start = time.monotonic()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("POST", "/api/v1.0/predictions", body, {"Content-Type": "application/json"})
        response = conn.getresponse()
        response.read()
        return response.status, time.monotonic() - start, ""
    except (OSError, http.client.HTTPException) as e:
        return None, time.monotonic() - start, f"{type(e).__name__}: {e}"
    finally:
        conn.close()


def ping(port: int, timeout: float = 5.0) -> int | None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", "/health/ping")
        response = conn.getresponse()
        response.read()
        return response.status
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()


# --- raw requests ---------------------------------------------------------------------------------


@dataclass
class Reply:
    status: int | None
    body: bytes
    seconds: float
    sent: int  # body bytes the server took before answering or closing
    error: str = ""

    def json(self) -> Any:
        return json.loads(self.body)


def raw_request(port: int, head: bytes, chunks: Iterable[bytes], timeout: float = 60.0) -> Reply:
    """Send `head` then the body chunks (stopping when the server closes or answers), then read the reply."""
    start = time.monotonic()
    sent = 0
    error = ""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(head)
        s.setblocking(False)
        early = b""
        for chunk in chunks:
            if time.monotonic() - start > timeout:
                error = "client timeout while sending"
                break
            try:  # an answer before the body is sent: stop sending
                early = s.recv(65536)
                if early or early == b"":
                    break
            except BlockingIOError:
                pass
            except OSError as e:
                error = f"{type(e).__name__} while sending"
                break
            s.settimeout(timeout)
            try:
                s.sendall(chunk)
                sent += len(chunk)
            except OSError as e:
                error = f"{type(e).__name__} while sending"
                break
            s.setblocking(False)
        s.settimeout(timeout)
        data = early
        try:
            while not _complete(data):
                part = s.recv(65536)
                if not part:
                    break
                data += part
        except OSError as e:
            error = error or f"{type(e).__name__} while reading"
    status = None
    body = b""
    if data.startswith(b"HTTP/1."):
        head_end = data.find(b"\r\n\r\n")
        status = int(data.split(b" ", 2)[1])
        body = data[head_end + 4 :] if head_end >= 0 else b""
    return Reply(status, body, time.monotonic() - start, sent, error)


def _complete(data: bytes) -> bool:
    head_end = data.find(b"\r\n\r\n")
    if head_end < 0:
        return False
    for line in data[:head_end].split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(data) - head_end - 4 >= int(value)
    return False


def post_head(path: str, content_type: str, length: int | None, extra: str = "") -> bytes:
    framing = f"Content-Length: {length}\r\n" if length is not None else "Transfer-Encoding: chunked\r\n"
    return (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\n{framing}{extra}\r\n").encode()


def repeated(prefix: bytes, unit: bytes, total: int, suffix: bytes) -> Iterator[bytes]:
    """prefix + unit repeated up to `total` bytes in all + suffix, in ~1 MiB chunks."""
    yield prefix
    block = unit * max(1, CHUNK // len(unit))
    left = total - len(prefix) - len(suffix)
    while left > 0:
        piece = block[: min(len(block), left)]
        left -= len(piece)
        yield piece
    yield suffix


def json_b64(total: int) -> tuple[str, Iterator[bytes]]:
    return "application/json", repeated(b'{"binData": "', b"AAAA", total, b'"}')


def json_ndarray(total: int) -> tuple[str, Iterator[bytes]]:
    return "application/json", repeated(b'{"data": {"ndarray": [', b"0,", total, b"0]}}")


BOUNDARY = "edgeservershostileboundary"
FORM = form_content_type(BOUNDARY)


def multipart_file(total: int) -> tuple[str, Iterator[bytes]]:
    """A form of one file part, `total` bytes in all."""
    head = part_head(BOUNDARY, "binData", "big.jpg", "image/jpeg")
    return FORM, repeated(head, b"A" * 64, total, part_end() + closing(BOUNDARY))


def multipart_crafted(total: int) -> tuple[str, Iterator[bytes]]:
    """CVE-2023-46136: a file part that starts with CR and has no CR or LF after it."""
    head = part_head(BOUNDARY, "binData", "x.jpg") + b"\r"
    return FORM, repeated(head, b"A" * 64, total, part_end() + closing(BOUNDARY))


def multipart_fields(fields: dict[str, str]) -> tuple[str, bytes]:
    return multipart(fields, BOUNDARY)


def chunked(chunks: Iterable[bytes]) -> Iterator[bytes]:
    for c in chunks:
        if c:
            yield b"%x\r\n%s\r\n" % (len(c), c)
    yield b"0\r\n\r\n"


# --- connection floods ------------------------------------------------------------------------------


def open_idle(port: int, count: int) -> list[socket.socket]:
    """`count` connections that send nothing (bounded: stops at the first refusal)."""
    held = []
    for _ in range(count):
        try:
            held.append(socket.create_connection(("127.0.0.1", port), timeout=5))
        except OSError:
            break
    return held


class Slowloris:
    """`count` connections, each sending one more header line every `period` s, reconnecting when closed."""

    def __init__(self, port: int, count: int, period: float = 1.0, limit_s: float = 120.0):
        self.port, self.count, self.period, self.limit_s = port, count, period, limit_s
        self.connects = 0
        self.closed_by_server = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _connect(self) -> socket.socket | None:
        try:
            s = socket.create_connection(("127.0.0.1", self.port), timeout=2)
            s.sendall(b"POST /api/v1.0/predictions HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            self.connects += 1
            return s
        except OSError:
            return None

    def _run(self) -> None:
        socks = [self._connect() for _ in range(self.count)]
        deadline = time.monotonic() + self.limit_s
        n = 0
        while not self._stop.wait(self.period) and time.monotonic() < deadline:
            n += 1
            for i, s in enumerate(socks):
                try:
                    if s is None:
                        raise OSError
                    s.sendall(b"X-Slow-%d: x\r\n" % n)
                except OSError:
                    if s is not None:
                        s.close()
                        self.closed_by_server += 1
                    socks[i] = self._connect()
        for s in socks:
            if s is not None:
                s.close()

    def __enter__(self) -> Slowloris:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(10)


# --- shutdown under load ---------------------------------------------------------------------------


def sigterm_under_load(
    server_pid: int, port: int, body: bytes, clients: int = 4, load_s: float = 2.0, limit_s: float = 60.0
) -> dict[str, Any]:
    """`clients` threads predicting in a loop; after `load_s` SIGTERM to the server's process group (as tini
    does). Returns every request's outcome and the exit code. A request is 'lost' when it was sent and got
    no answer or a 5xx; a refused connection (nothing sent) is clean."""
    outcomes: list[tuple[str, float, float]] = []  # (status or what happened, start, end)
    lock = threading.Lock()
    stop_at = time.monotonic() + limit_s
    stopped = threading.Event()

    def client() -> None:
        while time.monotonic() < stop_at:
            start = time.monotonic()
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                conn.connect()
            except OSError:
                kind = "refused"
            else:
                try:
                    conn.request("POST", "/api/v1.0/predictions", body, {"Content-Type": "application/json"})
                    response = conn.getresponse()
                    response.read()
                    kind = str(response.status)
                except (OSError, http.client.HTTPException) as e:
                    kind = f"lost: {type(e).__name__}"
                finally:
                    conn.close()
            with lock:
                outcomes.append((kind, start, time.monotonic()))
            if kind == "refused" and stopped.is_set():
                return

    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    for t in threads:
        t.start()
    time.sleep(load_s)
    term_at = time.monotonic()
    os.killpg(server_pid, signal.SIGTERM)
    stopped.set()
    for t in threads:
        t.join(max(1.0, stop_at - time.monotonic()))
    counts: dict[str, int] = {}
    for kind, _, _ in outcomes:
        counts[kind] = counts.get(kind, 0) + 1
    return {"counts": counts, "term_at": term_at, "outcomes": outcomes}
