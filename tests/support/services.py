"""Real services on loopback for the tests that fetch models, and the archives they serve.

- `web`: one HTTP server (stdlib http.server) that serves files from memory and misbehaves for real:
  drops connections half-way, answers errors, sends no Content-Length, sends an endless body, trickles.
  Files carry an ETag and a Last-Modified date and honour conditional and Range requests.
- `s3_server`: one S3 API (moto's ThreadedMotoServer).
- `Gate`: a TCP forwarder in front of either, for faults at the connection level: a port that accepts
  and never answers, a connection cut after so many bytes; it keeps the request heads it forwarded.
- `BlackHole`: a port that accepts connections and never answers, counting them.
`web` and `s3_server` are module-scoped fixtures, registered for every test by tests/conftest.py.
Archives are built by the test that needs them; `many_files_tgz` writes a million-entry .tgz in seconds.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import os
import re
import select
import socket
import tarfile
import threading
import time
import zipfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import pytest

from tests.support.paths import MOBILENET_V1

MODEL_DIR = MOBILENET_V1
MODEL = MODEL_DIR / "mobilenet_v1_0.25_128_quant.tflite"
LABELS = MODEL_DIR / "labels.txt"
LAST_MODIFIED = "Wed, 01 Jan 2025 00:00:00 GMT"


# --- HTTP ----------------------------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    """Routes (every path is counted in server.hits; a proxy request for any host is served the same):
    /files/<name>              the bytes of server.files[name]
    /drop/<n>/<name>           the first n requests send half the body, then close the connection
    /flaky/<code>/<n>/<name>   the first n requests answer <code>, then the file
    /status/<code>/<name>      always <code>
    /download?<name>           the file, named only by Content-Disposition
    /nolength/<name>           the file without Content-Length, ended by closing the connection
    /endless/<name>            zeros without Content-Length until the client goes away
    /trickle/<seconds>/<name>  the file's headers, then one byte every <seconds>
    /redirect/<name>?<url>     302 to <url> (<name> is there for the file name)
    The headers of the latest request to each path are kept in server.headers_seen. While
    server.answer_all is set, every request gets that status (an outage answered with 503).
    Files (/files, /drop) carry ETag (from their bytes) and Last-Modified, answer If-None-Match /
    If-Modified-Since with 304, and Range: bytes=N- (with If-Range) with 206 and the rest.
    """

    server: FileServer
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:  # keep pytest output clean
        pass

    def do_GET(self) -> None:  # noqa: N802
        url = urlsplit(self.path)
        self.server.hits[url.path] += 1
        self.server.headers_seen[url.path] = dict(self.headers)
        hits = self.server.hits[url.path]
        parts = url.path.strip("/").split("/")
        if self.server.answer_all:
            return self._send_status(self.server.answer_all)
        try:
            route, args = parts[0], parts[1:]
            if route == "files":
                return self._send_file(args[0])
            if route == "drop":
                return self._send_file(args[1], half=hits <= int(args[0]))
            if route == "flaky":
                return self._send_status(int(args[0])) if hits <= int(args[1]) else self._send_file(args[2])
            if route == "status":
                return self._send_status(int(args[0]))
            if route == "download":
                name = url.query
                return self._send_file(name, {"Content-Disposition": f'attachment; filename="{name}"'})
            if route == "nolength":
                return self._send_body(self.server.files[args[0]], length=False)
            if route == "endless":
                return self._send_endless()
            if route == "trickle":
                return self._send_body(self.server.files[args[1]], every=float(args[0]))
            if route == "redirect":
                self.send_response(302)
                self.send_header("Location", url.query)
                self.send_header("Content-Length", "0")
                return self.end_headers()
        except (KeyError, IndexError, ValueError):
            pass
        self._send_status(404)

    def _send_file(self, name: str, headers: dict[str, str] | None = None, half: bool = False) -> None:
        body = self.server.files.get(name)
        if body is None:
            return self._send_status(404)
        etag = f'"{hashlib.sha256(body).hexdigest()[:16]}"'
        validators = {"ETag": etag, "Last-Modified": LAST_MODIFIED}
        if self.headers.get("If-None-Match") == etag or (
            "If-None-Match" not in self.headers and self.headers.get("If-Modified-Since") == LAST_MODIFIED
        ):
            self.send_response(304)
            for k, v in validators.items():
                self.send_header(k, v)
            return self.end_headers()
        m = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", ""))
        if m and self.headers.get("If-Range", etag) in validators.values():
            start = int(m.group(1))
            if start >= len(body):
                return self._send_status(416)
            ranged = {"Content-Range": f"bytes {start}-{len(body) - 1}/{len(body)}"}
            return self._send_body(body[start:], {**validators, **ranged, **(headers or {})}, half=half, status=206)
        self._send_body(body, headers={**validators, **(headers or {})}, half=half)

    def _send_body(
        self,
        body: bytes,
        headers: dict[str, str] | None = None,
        half: bool = False,
        length: bool = True,
        every: float = 0.0,
        status: int = 200,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        if length:
            self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        try:
            if every:
                for i in range(len(body)):
                    self.wfile.write(body[i : i + 1])
                    self.wfile.flush()
                    time.sleep(every)
            else:
                self.wfile.write(body[: len(body) // 2] if half else body)
        except OSError:  # the client gave up
            pass
        if half or not length:
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)

    def _send_endless(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.end_headers()
        zeros = bytes(1 << 16)
        try:
            while True:
                self.wfile.write(zeros)
        except OSError:  # the client gave up, as it should
            self.close_connection = True

    def _send_status(self, code: int) -> None:
        body = f"status {code}\n".encode()
        self.send_response(code)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class FileServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.files: dict[str, bytes] = {}
        self.hits: Counter[str] = Counter()
        self.headers_seen: dict[str, dict[str, str]] = {}
        self.answer_all = 0  # a status for every request (an outage), 0: serve normally

    def outage(self, status: int = 503) -> contextlib.AbstractContextManager[None]:
        """Every request answered with `status` for the duration of a `with` block."""

        @contextlib.contextmanager
        def down() -> Iterator[None]:
            self.answer_all = status
            try:
                yield
            finally:
                self.answer_all = 0

        return down()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def url(self, name: str, route: str = "files") -> str:
        return f"{self.base}/{route}/{name}"


@pytest.fixture(scope="module")
def web() -> Iterator[FileServer]:
    """The HTTP server; put bytes in web.files[name] and fetch web.url(name)."""
    server = FileServer()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


class BlackHole:
    """A loopback port that accepts connections and never answers (nor reads), counting them; closed with the
    `with` block that holds it."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0), backlog=64)
        self.port = self.listener.getsockname()[1]
        self.accepted = 0
        self.held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.accepted += 1
            self.held.append(conn)

    def __enter__(self) -> BlackHole:
        return self

    def __exit__(self, *exc: object) -> None:
        self.listener.close()
        for conn in self.held:
            conn.close()


def closed_port() -> int:
    """A loopback port with nothing listening (bound then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Gate:
    """A TCP forwarder on a loopback port in front of `target` (host, port), for faults a server cannot
    make itself: `mode` "open" forwards, "blackhole" accepts connections and never answers (nor reads),
    "cut" forwards but closes the connection once the server has sent `cut_after` bytes on it (once:
    then it is "open" again). The first 2 KiB each client sent on a connection are kept in `requests`,
    so a test can see a Range header; `bytes_to_clients` counts what the server sent through it, `accepted` the
    connections clients made."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.mode = "open"
        self.cut_after = 0
        self.requests: list[str] = []
        self.bytes_to_clients = 0
        self.accepted = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._held: list[socket.socket] = []
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._listener.getsockname()[1]}"

    def blackholed(self) -> contextlib.AbstractContextManager[None]:
        """Mode "blackhole" for the duration of a `with` block, then "open" again."""

        @contextlib.contextmanager
        def silent() -> Iterator[None]:
            self.mode = "blackhole"
            try:
                yield
            finally:
                self.mode = "open"

        return silent()

    def close(self) -> None:
        self._closed = True
        self._listener.close()
        for s in self._held:
            s.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            self.accepted += 1
            if self.mode == "blackhole":
                self._held.append(client)  # open, silent: the client waits for its own timeout
                continue
            threading.Thread(target=self._forward, args=(client,), daemon=True).start()

    def _forward(self, client: socket.socket) -> None:
        cut = self.cut_after if self.mode == "cut" else 0
        sent = 0
        try:
            server = socket.create_connection(self.target, timeout=5)
        except OSError:
            client.close()
            return
        with client, server:
            while True:
                readable, _, _ = select.select([client, server], [], [], 30)
                if not readable:
                    return
                for sock in readable:
                    data = sock.recv(65536)
                    if not data:
                        return
                    if sock is client:
                        if b"HTTP/1." in data[:2048]:
                            self.requests.append(data[:2048].decode("latin-1"))
                        server.sendall(data)
                        continue
                    if cut and sent + len(data) >= cut:
                        self.bytes_to_clients += cut - sent
                        client.sendall(data[: cut - sent])
                        self.mode = "open"
                        client.shutdown(socket.SHUT_RDWR)
                        return
                    sent += len(data)
                    self.bytes_to_clients += len(data)
                    client.sendall(data)


# --- S3 ------------------------------------------------------------------------------------------


@dataclass
class S3Server:
    endpoint: str
    client: Any  # a boto3 S3 client with the credentials below
    server: Any  # the running moto ThreadedMotoServer

    ACCESS_KEY = "AKIDEXAMPLE"
    SECRET_KEY = "wJalrXUtnFEMI-K7MDENG-bPxRfiCYEXAMPLEKEY"

    @property
    def env(self) -> dict[str, str]:
        """The environment that points edgeservers.storage (and the servers) at this S3."""
        return {
            "AWS_ACCESS_KEY_ID": self.ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": self.SECRET_KEY,
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_REGION": "us-east-1",
        }

    def outage(self) -> contextlib.AbstractContextManager[None]:
        """Stop the S3 API for the duration of a `with` block; it comes back on the same port with the same
        objects (moto keeps them in this process)."""

        @contextlib.contextmanager
        def down() -> Iterator[None]:
            host, port = self.server.get_host_and_port()
            self.server.stop()  # stops serving, but leaves werkzeug's socket listening (connections would queue)
            self.server._server.server_close()
            # Bound without listening: connections are refused, and no other process (a parallel test's
            # free_port, a client's source port) can take the port before S3 comes back on it.
            hold = socket.socket()
            hold.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            hold.bind((host, port))
            try:
                yield
            finally:
                hold.close()
                self.server = _moto(host, port)

        return down()

    def put(self, bucket: str, objects: dict[str, bytes]) -> None:
        """Create `bucket` if it is new and store the objects in it."""
        if bucket not in {b["Name"] for b in self.client.list_buckets()["Buckets"]}:
            self.client.create_bucket(Bucket=bucket)
        for key, body in objects.items():
            self.client.put_object(Bucket=bucket, Key=key, Body=body)


def _moto(host: str, port: int) -> Any:
    """A started moto server. A process forked from the test process later (the metrics Manager of an
    in-process Seldon app) closes its copy of the listening socket: through an outage it would keep the
    port taken and queue connections instead of refusing them."""
    from moto.server import ThreadedMotoServer

    server: Any = ThreadedMotoServer(ip_address=host, port=port, verbose=False)
    server.start()
    os.register_at_fork(after_in_child=server._server.socket.close)
    return server


def start_s3() -> S3Server:
    """A real S3 API on loopback (moto in server mode), empty until put() fills it; stop it with .server.stop()."""
    import boto3

    server = _moto("127.0.0.1", 0)
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=S3Server.ACCESS_KEY,
        aws_secret_access_key=S3Server.SECRET_KEY,
    )
    return S3Server(endpoint, client, server)


@pytest.fixture(scope="module")
def s3_server() -> Iterator[S3Server]:
    """start_s3() for the tests of one module."""
    s3 = start_s3()
    try:
        yield s3
    finally:
        s3.server.stop()


# --- archives ------------------------------------------------------------------------------------


def model_files() -> dict[str, bytes]:
    """The layout every good archive and directory in these tests holds."""
    return {"model.tflite": MODEL.read_bytes(), "meta/labels.txt": LABELS.read_bytes()}


def make_zip(entries: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries.items():
            zf.writestr(zipfile.ZipInfo(name), data, zipfile.ZIP_DEFLATED)  # ZipInfo keeps hostile names as given
    return buf.getvalue()


TarMode = Literal["w", "w:gz"]


def make_tar(entries: list[tarfile.TarInfo | tuple[str, bytes]], mode: TarMode = "w") -> bytes:
    """A tar (mode "w") or tar.gz (mode "w:gz") of files given as (name, data) and raw TarInfo links."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode, format=tarfile.GNU_FORMAT) as tf:
        for entry in entries:
            if isinstance(entry, tarfile.TarInfo):
                tf.addfile(entry)
            else:
                name, data = entry
                info = tarfile.TarInfo(name)
                info.size = len(data)
                info.mode = 0o644
                tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def tar_dir(directory: Path, mode: TarMode = "w:gz") -> bytes:
    """The files of a model directory as a tar.gz, at its top level."""
    return make_tar([(f.name, f.read_bytes()) for f in sorted(directory.iterdir()) if f.is_file()], mode)


def many_files_tgz(path: Path, count: int) -> None:
    """A .tgz of `count` empty files, written as raw ustar headers (tarfile would take minutes):
    a million entries make a 9 MB file in a few seconds."""
    info = tarfile.TarInfo("f0000000")
    info.mode = 0o644
    header = bytearray(info.tobuf(format=tarfile.USTAR_FORMAT))
    header[148:156] = b" " * 8  # the checksum is computed with its own field as spaces
    base = sum(header) - sum(b"f0000000")
    with gzip.open(path, "wb", compresslevel=1) as out:
        batch = []
        for i in range(count):
            name = b"f%07d" % i
            header[0:8] = name
            header[148:155] = b"%06o\0" % (base + sum(name))
            batch.append(bytes(header))
            if len(batch) == 10_000:
                out.write(b"".join(batch))
                batch.clear()
        out.write(b"".join(batch) + bytes(1024))  # two zero blocks end the archive


def link(name: str, target: str, hard: bool = False) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.LNKTYPE if hard else tarfile.SYMTYPE
    info.linkname = target
    return info


def tree(root: Path) -> dict[str, bytes]:
    """Every regular file under root (relative posix path -> bytes); links are followed."""
    out = {}
    for dirpath, _dirs, names in os.walk(root):
        for name in names:
            p = Path(dirpath) / name
            out[p.relative_to(root).as_posix()] = p.read_bytes()
    return out
