"""Real servers and archive builders for tests/test_storage.py: a loopback HTTP server with
misbehaving routes, and a loopback S3 server (moto in server mode)."""

from __future__ import annotations

import io
import os
import socket
import tarfile
import threading
import zipfile
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
MODEL_DIR = ROOT / "models" / "mobilenet_v1_025_quant"
MODEL = MODEL_DIR / "mobilenet_v1_0.25_128_quant.tflite"
LABELS = MODEL_DIR / "labels.txt"


class _Handler(BaseHTTPRequestHandler):
    """Routes (every path is counted in server.hits):
    /files/<name>              the bytes of server.files[name]
    /drop/<n>/<name>           the first n requests send half the body, then close the connection
    /flaky/<code>/<n>/<name>   the first n requests answer <code>, then the file
    /status/<code>/<name>      always <code>
    /download?...              the file named in the query, named only by Content-Disposition
    """

    server: "FileServer"
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:  # keep pytest output clean
        pass

    def do_GET(self) -> None:  # noqa: N802
        url = urlsplit(self.path)
        self.server.hits[url.path] += 1
        hits = self.server.hits[url.path]
        parts = url.path.strip("/").split("/")
        try:
            if parts[0] == "files":
                return self._send_file(parts[1])
            if parts[0] == "drop":
                if hits <= int(parts[1]):
                    return self._send_half(self.server.files[parts[2]])
                return self._send_file(parts[2])
            if parts[0] == "flaky":
                if hits <= int(parts[2]):
                    return self._send_status(int(parts[1]))
                return self._send_file(parts[3])
            if parts[0] == "status":
                return self._send_status(int(parts[1]))
            if parts[0] == "download":
                name = url.query
                return self._send_file(name, headers={"Content-Disposition": f'attachment; filename="{name}"'})
        except (KeyError, IndexError, ValueError):
            pass
        self._send_status(404)

    def _send_file(self, name: str, headers: dict[str, str] | None = None) -> None:
        body = self.server.files.get(name)
        if body is None:
            return self._send_status(404)
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def _send_half(self, body: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body[: len(body) // 2])
        self.wfile.flush()
        self.close_connection = True
        self.connection.shutdown(socket.SHUT_RDWR)

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

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


def serve_files() -> Iterator[FileServer]:
    server = FileServer()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def closed_port() -> int:
    """A loopback port with nothing listening (bound then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- archives ---------------------------------------------------------------------------------


def model_files() -> dict[str, bytes]:
    """The layout every good archive and directory in these tests holds."""
    return {"model.tflite": MODEL.read_bytes(), "meta/labels.txt": LABELS.read_bytes()}


def make_zip(entries: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries.items():
            zf.writestr(zipfile.ZipInfo(name), data)  # ZipInfo keeps hostile names as given
    return buf.getvalue()


def make_tar(entries: list[tarfile.TarInfo | tuple[str, bytes]], mode: str = "w") -> bytes:
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
