"""The REST worker: a gunicorn worker that reads HTTP with tornado and runs Seldon's Flask app in threads.

seldon-core 1.17.1 runs its REST app on gunicorn's default sync worker with a 5000 s timeout: one
thread per connection, blocked while the client sends nothing. One idle socket stops all REST traffic
of a worker with one thread. This worker keeps gunicorn's arbiter (it restarts dead workers and honours
GUNICORN_WORKERS, GUNICORN_THREADS, GUNICORN_KEEPALIVE, GUNICORN_MAX_REQUESTS) but serves differently:

- tornado reads every connection asynchronously on one event loop: a silent or slow socket costs a few
  KB of memory, no thread. The request line and headers must arrive within `header_timeout` seconds in
  total (also the keep-alive idle limit; slowloris-proof), the body within `body_timeout`, headers are
  at most 64 KiB, and at most `max_connections` connections are open: above it a new one is answered
  503 and closed.
- The request head is read strictly: lines end with CRLF, an HTTP/1.1 request carries one valid Host,
  a body is framed by one Content-Length of ASCII digits or by `Transfer-Encoding: chunked` (HTTP/1.1
  only), never both. Anything else answers 400 once and closes the connection without reading a body,
  so no byte of it can be taken for a next request.
- The body is checked as it arrives, before it is kept: a Content-Length above `max_request_bytes`, or a
  chunked body that grows past it, answers 413 at once, naming the size, the limit and the parameter;
  the rest of the body is read and dropped (for at most `DRAIN_SECONDS`, so that the client reads the
  answer instead of a reset) and the connection closed. Nothing past the limit is ever buffered.
  The bodies of accepted requests waiting for a thread are held in memory up to
  `max_request_bytes x (threads + 2)` in all; above that a request answers 503 (retry).
- Accepted requests run Seldon's Flask WSGI app in a pool of GUNICORN_THREADS threads, as the sync
  worker did.
- SIGTERM: stop accepting (connections already queued in the listen backlog are taken first), finish
  every request received, answering it with `Connection: close`, within `graceful_timeout`, then exit.
  A connection open but silent then gets `IDLE_GRACE` seconds to send its request before it is closed.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from gunicorn.workers.base import Worker
from tornado import httputil
from tornado.httpserver import HTTPServer
from tornado.ioloop import IOLoop
from tornado.iostream import IOStream
from tornado.wsgi import WSGIContainer

from ..protocols.errors import request_too_large, v1_body
from .patches import relies_on

relies_on(
    "tornado.http1connection:HTTP1Connection._read_message_inner",
    "823ab7277a0b5056",
    "header_timeout bounds request line + headers in total; no 100-continue once answered; delegate.finish only if unanswered",
)
relies_on(
    "tornado.http1connection:HTTP1Connection._parse_headers",
    "b3c54fda82dad6ac",
    "(data) -> (start line, headers) of each request head, called through the instance (crlf_only wraps it)",
)
relies_on(
    "tornado.http1connection:HTTP1Connection.detach",
    "bd8f827cec92a67f",
    "takes the stream; _read_message_inner then reads nothing more",
)
relies_on(
    "tornado.httputil:HTTPServerRequest.__init__",
    "189551b6385eb71e",
    "raises HTTPInputError for a missing, invalid or repeated Host",
)
relies_on(
    "tornado.tcpserver:TCPServer._handle_connection",
    "9c38c32e7f22ee10",
    "wraps an accepted socket in an IOStream (used to take the backlog at stop)",
)
relies_on(
    "gunicorn.workers.base:Worker.__init__",
    "e0f1de2d60574066",
    "(age, ppid, sockets, app, timeout, cfg, log): does nothing to the process",
)
relies_on(
    "gunicorn.workers.base:Worker.init_process",
    "350cf06610586641",
    "signal handlers, app.wsgi() (the wrapper's load()), post_worker_init, then run(): also without an arbiter",
)

log = logging.getLogger(__name__)

MAX_HEADER_BYTES = 64 << 10
DRAIN_SECONDS = 10.0  # how long a refused body is read and dropped so the client can read the 413
UNLIMITED = 1 << 62
# Bytes tornado asks the socket for in one read (a fresh buffer each time) and hands over in one
# data_received: a camera JPEG's body in one to three reads (256 KiB took twice as long for parrot.jpg).
READ_CHUNK_BYTES = 1 << 20
# Seconds a connection open and silent at SIGTERM gets to send its request (its client may be sending it).
IDLE_GRACE = 1.0


@dataclass(frozen=True)
class RestOptions:
    """What the REST (and metrics) worker enforces; built from the component's parameters (settings.py)."""

    max_request_bytes: int = 16 << 20
    header_timeout: float = 10.0
    body_timeout: float = 60.0
    max_connections: int = 1000
    graceful_timeout: float = 20.0
    bind_address: str = "0.0.0.0"
    cors_origins: tuple[str, ...] = ()


def error_body(code: int, reason: str, info: str) -> bytes:
    """The worker's own refusals in Seldon's v1 error body (the protocol is not known before the app runs)."""
    return json.dumps(v1_body(code, reason, info)).encode()


def raw_response(code: int, reason: str, info: str, extra: str = "") -> bytes:
    """A whole HTTP/1.1 error answer that closes its connection (for a connection no longer parsed by tornado)."""
    body = error_body(code, reason, info)
    phrase = httputil.responses.get(code, "Error")
    head = (
        f"HTTP/1.1 {code} {phrase}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        f"Connection: close\r\n{extra}\r\n"
    )
    return head.encode() + body


_DIGITS = re.compile(r"[0-9]+")


def framing_problem(start_line: httputil.RequestStartLine, headers: httputil.HTTPHeaders) -> str | None:
    """What is wrong with how the request says its body is framed, or None. Refused rather than guessed:
    two parsers (a proxy's, ours) reading one byte stream differently is how requests are smuggled."""
    lengths = headers.get_list("Content-Length")
    if len(lengths) > 1 or any("," in v for v in lengths):
        return f"the request has several Content-Length values ({', '.join(lengths)[:80]}): send one"
    if lengths and not _DIGITS.fullmatch(lengths[0]):
        return f"Content-Length {lengths[0][:40]!r} is not a number of bytes (ASCII digits)"
    encodings = headers.get_list("Transfer-Encoding")
    if encodings:
        if lengths:
            return "the request has both Content-Length and Transfer-Encoding: send one"
        if len(encodings) > 1 or encodings[0].strip().lower() != "chunked":
            return (
                f"Transfer-Encoding {', '.join(encodings)[:80]!r} is not supported: send chunked, or a Content-Length"
            )
        if start_line.version != "HTTP/1.1":
            return f"chunked Transfer-Encoding needs HTTP/1.1, the request is {start_line.version}"
    return None


def crlf_only(parse: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    """tornado's request-head parser, refusing a line that ends with a bare LF (which tornado accepts)."""

    def parse_strictly(data: bytes) -> Any:
        head = data.lstrip(b"\r\n")  # empty lines before a request are allowed (RFC 9112 2.2)
        if head.count(b"\n") != head.count(b"\r\n"):
            raise httputil.HTTPInputError("a line of the request head ends with a bare LF: end every line with CRLF")
        return parse(data)

    return parse_strictly


class Counters:
    """State shared by the worker and its connections (one event loop: no locks)."""

    def __init__(self, options: RestOptions, threads: int):
        self.options = options
        self.active = 0  # requests received (headers) and not yet answered
        self.buffered = 0  # body bytes held in memory
        self.buffer_budget = options.max_request_bytes * (threads + 2)
        self.stopping = False
        self.handled = 0


class LimitedHTTPServer(HTTPServer):
    """tornado's HTTPServer with a cap on open connections."""

    def initialize(self, *args: Any, max_connections: int = 1000, **kwargs: Any) -> None:
        super().initialize(*args, **kwargs)
        self.max_connections = max_connections
        self.refused = 0

    def handle_stream(self, stream: IOStream, address: tuple) -> None:
        if len(self._connections) >= self.max_connections:
            self.refused += 1
            answer = raw_response(
                503,
                "TOO_MANY_CONNECTIONS",
                f"{len(self._connections)} connections are open, the limit of this worker; "
                "the parameter max_connections sets it",
                extra="Retry-After: 1\r\n",
            )
            stream.write(answer).add_done_callback(lambda _: stream.close())
            return
        super().handle_stream(stream, address)

    @property
    def open_connections(self) -> int:
        """Connections open (reading, answering or idle between requests)."""
        return len(self._connections)

    def accept_pending(self, limit: int) -> int:
        """Take the connections already waiting in the listen backlog (before the sockets close)."""
        taken = 0
        for sock in list(self._sockets.values()):
            while taken < limit:
                try:
                    conn, address = sock.accept()
                except (BlockingIOError, InterruptedError, OSError):
                    break
                taken += 1
                self._handle_connection(conn, address)
        return taken


class WSGIApp(httputil.HTTPServerConnectionDelegate):
    """Runs a WSGI app for each request, in `executor`, once its whole body has arrived within the limits."""

    def __init__(self, app: Callable, executor: ThreadPoolExecutor, counters: Counters):
        self.app = app
        self.executor = executor
        self.counters = counters
        self.container = WSGIContainer(app, executor=executor)  # only for its environ()

    def start_request(self, server_conn: object, request_conn: httputil.HTTPConnection) -> httputil.HTTPMessageDelegate:
        request_conn._parse_headers = crlf_only(request_conn._parse_headers)  # type: ignore[attr-defined]
        return RequestReader(self, request_conn)


class RequestReader(httputil.HTTPMessageDelegate):
    def __init__(self, owner: WSGIApp, conn: httputil.HTTPConnection):
        self.owner = owner
        self.counters = owner.counters
        self.conn = conn
        self.chunks: list[bytes] = []
        self.size = 0
        self.refused = False
        self.counted = False
        self.closed = False
        self.environ: dict[str, Any] | None = None  # the WSGI environment but its body, made from the head

    # --- reading -----------------------------------------------------------------------------

    def headers_received(self, start_line: Any, headers: httputil.HTTPHeaders) -> None:
        self.counters.active += 1
        self.counted = True
        self.conn.set_max_body_size(UNLIMITED)  # type: ignore[attr-defined]  # counted here instead
        problem = framing_problem(start_line, headers)
        if problem is None:
            try:  # the request checks Host as HTTP/1.1 requires it; the environment reads its port
                request = httputil.HTTPServerRequest(  # a copy: environ() takes headers out, tornado reads them on
                    connection=self.conn, start_line=start_line, headers=headers.copy()
                )
                self.environ = self.owner.container.environ(request)
            except (httputil.HTTPInputError, ValueError) as e:
                problem = f"Host {headers.get('Host', '')[:80]!r}: {e}; HTTP/1.1 needs one Host header, host[:port]"
        if problem is not None:
            self._reject(400, "BAD_REQUEST", problem)
            return
        limit = self.counters.options.max_request_bytes
        length = int(headers.get("Content-Length", 0))
        if length > limit:
            info = request_too_large(f"{length} bytes (Content-Length)", limit)
            if length > UNLIMITED:  # more than tornado would even begin to read
                self._reject(413, "REQUEST_TOO_LARGE", info)
            else:
                self._refuse(413, "REQUEST_TOO_LARGE", info, drain=headers.get("Expect", "").lower() != "100-continue")

    def data_received(self, chunk: bytes) -> None:
        if self.refused:
            return  # dropped
        limit = self.counters.options.max_request_bytes
        self.size += len(chunk)
        if self.size > limit:
            self._release()
            self._refuse(
                413, "REQUEST_TOO_LARGE", request_too_large(f"more than {limit} bytes (chunked)", limit), drain=True
            )
            return
        if self.counters.buffered + len(chunk) > self.counters.buffer_budget:
            self._release()
            self._refuse(
                503,
                "SERVER_BUSY",
                f"{self.counters.buffered} bytes of request bodies are waiting in this worker, its limit "
                f"(max_request_bytes x (threads + 2) = {self.counters.buffer_budget}): retry shortly",
                drain=True,
            )
            return
        self.counters.buffered += len(chunk)
        self.chunks.append(chunk)

    def finish(self) -> None:
        if self.refused:  # the dropped body has all arrived: close once the refusal is written
            self.conn.finish()
            self.written.add_done_callback(lambda _: self.conn.close())  # type: ignore[attr-defined]
            return
        body = b"".join(self.chunks)
        self.chunks = []
        IOLoop.current().add_callback(self._run, body)

    def on_connection_close(self) -> None:
        self.closed = True
        self._release()
        self._done()

    # --- answering ---------------------------------------------------------------------------

    def _refuse(self, code: int, reason: str, info: str, drain: bool) -> None:
        """Answer at once; drop the rest of the body for a while (so the client reads this), then close."""
        self.refused = True
        log.warning("refused a request with %d: %s", code, info)
        body = error_body(code, reason, info)
        phrase = httputil.responses.get(code, "Error")
        headers = httputil.HTTPHeaders(
            {"Content-Type": "application/json", "Content-Length": str(len(body)), "Connection": "close"}
        )
        self.written = self.conn.write_headers(
            httputil.ResponseStartLine("HTTP/1.1", code, phrase), headers, chunk=body
        )
        if drain:
            self.conn.set_body_timeout(min(DRAIN_SECONDS, self.counters.options.body_timeout))  # type: ignore[attr-defined]
        else:
            self.conn.finish()
        self._done()

    def _reject(self, code: int, reason: str, info: str) -> None:
        """Answer and close at once, reading nothing more: the connection is taken from tornado (whose parser
        would otherwise go on to read a body this head cannot be trusted to frame)."""
        self.refused = True
        log.warning("refused a request with %d: %s", code, info)
        stream = self.conn.detach()  # type: ignore[attr-defined]
        stream.write(raw_response(code, reason, info)).add_done_callback(lambda _: stream.close())
        self._done()

    def _release(self) -> None:
        if self.chunks or self.size:
            self.counters.buffered -= sum(len(c) for c in self.chunks)
            self.chunks = []
            self.size = 0

    def _done(self) -> None:
        if self.counted:
            self.counted = False
            self.counters.active -= 1

    async def _run(self, body: bytes) -> None:
        """Run the app on the request in a thread, answer it, and count it out whatever happens."""
        try:
            status, headers, data = await self._call_app(body)
            self.counters.handled += 1
            if not self.closed:
                self._answer(status, headers, data)
        finally:
            self._done()

    async def _call_app(self, body: bytes) -> tuple[str, list[tuple[str, str]], bytes]:
        environ, self.environ = self.environ, None
        assert environ is not None
        try:
            environ["wsgi.input"] = io.BytesIO(body)
            # The whole body is in wsgi.input: werkzeug then reads it as it is (no LimitedStream copying it
            # twice in 64 KiB pieces) and sees a chunked body at all (else empty for want of a Content-Length).
            environ["wsgi.input_terminated"] = True
            return await asyncio.get_running_loop().run_in_executor(
                self.owner.executor, call_wsgi, self.owner.app, environ
            )
        except Exception as e:  # the app itself failed (Flask answers its own errors)
            log.exception("WSGI app failed")
            info = f"{type(e).__name__}: {str(e)[:200]}"
            return (
                "500 Internal Server Error",
                [("Content-Type", "application/json")],
                error_body(500, "MICROSERVICE_INTERNAL_ERROR", info),
            )
        finally:
            self.counters.buffered -= len(body)
            self.size = 0
            del body

    def _answer(self, status: str, headers: list[tuple[str, str]], data: bytes) -> None:
        code, _, phrase = status.partition(" ")
        out = httputil.HTTPHeaders()
        for name, value in headers:
            if name.lower() not in ("content-length", "transfer-encoding", "connection"):
                out.add(name, value)
        out["Content-Length"] = str(len(data))
        stopping = self.counters.stopping
        if stopping:
            out["Connection"] = "close"
        written = self.conn.write_headers(httputil.ResponseStartLine("HTTP/1.1", int(code), phrase), out, chunk=data)
        self.conn.finish()
        if stopping:  # as the header says, so the stop need not wait for this connection
            written.add_done_callback(lambda _: self.conn.close())  # type: ignore[attr-defined]


def call_wsgi(app: Callable, environ: dict) -> tuple[str, list[tuple[str, str]], bytes]:
    """Run a WSGI app to completion: (status, headers, body)."""
    response: list[Any] = []
    written: list[bytes] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Callable[[bytes], None]:
        response[:] = [status, headers]
        return written.append

    result = app(environ, start_response)
    try:
        written.extend(result)
    finally:
        if hasattr(result, "close"):
            result.close()
    return response[0], response[1], b"".join(written)


class EdgeWorker(Worker):
    """The gunicorn worker class the wrapper runs REST on (seldon/rest_app.py sets it)."""

    def init_process(self) -> None:
        IOLoop.clear_current()  # a loop cannot survive a fork
        super().init_process()

    def handle_exit(self, sig: int, frame: Any) -> None:
        self.alive = False

    def run(self) -> None:
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        options: RestOptions = getattr(self.app, "rest_options", None) or RestOptions()
        threads = max(1, self.cfg.threads)
        executor = ThreadPoolExecutor(threads, thread_name_prefix="rest")
        counters = Counters(options, threads)
        server = LimitedHTTPServer(
            WSGIApp(self.wsgi, executor, counters),
            max_connections=options.max_connections,
            no_keep_alive=self.cfg.keepalive <= 0,
            idle_connection_timeout=options.header_timeout,
            body_timeout=options.body_timeout,
            max_header_size=MAX_HEADER_BYTES,
            max_body_size=UNLIMITED,
            chunk_size=READ_CHUNK_BYTES,
        )
        for s in self.sockets:
            s.setblocking(False)
            server.add_socket(s)  # gunicorn's socket wrapper delegates to the socket
        loop = asyncio.get_running_loop()
        while self.alive:
            self.notify()
            if self.ppid != os.getppid():
                self.log.info("Parent changed, shutting down: %s", self)
                break
            if counters.handled >= self.max_requests:
                self.log.info("Autorestarting worker after %d requests", counters.handled)
                break
            await asyncio.sleep(0.2)
        # Graceful stop: take what is already queued, stop accepting, answer what was received, and give
        # every connection still open (just accepted, or kept alive) IDLE_GRACE seconds to send the request
        # its client may be sending at this moment: closing the socket under it would lose that request
        # (the client reads a reset). Answers now carry `Connection: close` and close their connection.
        counters.stopping = True
        taken = server.accept_pending(options.max_connections)
        server.stop()
        began = loop.time()
        deadline = began + max(1.0, self.cfg.graceful_timeout - 1.0)
        await asyncio.sleep(0.05)  # let the just-taken connections read their headers
        while loop.time() < deadline and (
            counters.active or (server.open_connections and loop.time() < began + IDLE_GRACE)
        ):
            self.notify()
            await asyncio.sleep(0.05)
        left = counters.active
        try:
            await asyncio.wait_for(server.close_all_connections(), timeout=2.0)
        except Exception:  # a connection that will not close in time: the process exit closes it
            pass
        executor.shutdown(wait=False, cancel_futures=True)
        self.log.info(
            "worker %s stopped: %d requests answered, %d queued connections taken at stop, %d unanswered",
            self.pid,
            counters.handled,
            taken,
            left,
        )
