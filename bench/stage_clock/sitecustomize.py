"""Benchmark only (bench/stages.py puts this directory and the repository on a server's PYTHONPATH):
timestamps of one REST request at each hand-over inside the server, written as one line per request.

The server's own code is unchanged; its steps are wrapped from outside, in the process that serves REST
(with one REST worker, the wrapper's main process). Per request, in order:

    headers_received, body complete (finish), request coroutine runs (_run), request thread starts
    (call_wsgi), predict_raw starts, predict_raw returns, request thread done (call_wsgi returns),
    event loop resumes (write_headers), answer handed to the socket (_done)

and the request thread's CPU time over its three parts. Lines go to the file named by
EDGESERVERS_STAGE_CLOCK: "<9 perf_counter stamps> <3 thread_time spans>", in seconds.
"""

from __future__ import annotations

import contextlib
import functools
import os
import threading
import time
from collections.abc import Iterator
from typing import Any

import flask
from tornado.http1connection import HTTP1Connection

from edgeservers.seldon import rest_worker
from edgeservers.seldon.component import EdgeModelServer

_OUT = open(os.environ["EDGESERVERS_STAGE_CLOCK"], "a", buffering=1)  # noqa: SIM115 (lives as long as the process)
_KEY = "edgeservers.stage_clock"
_lock = threading.Lock()
_by_connection: dict[int, tuple[list[float], list[float]]] = {}


def _wrap(cls: Any, name: str, before: Any) -> None:
    original = getattr(cls, name)

    @functools.wraps(original)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        before(self)
        return original(self, *args, **kwargs)

    setattr(cls, name, wrapper)


@contextlib.contextmanager
def _span(clock: tuple[list[float], list[float]]) -> Iterator[None]:
    """A request's stamps (wall clock, and this thread's CPU time) at the start and at the end of the block."""
    stamps, cpu = clock
    stamps.append(time.perf_counter())
    cpu.append(time.thread_time())
    try:
        yield
    finally:
        cpu.append(time.thread_time())
        stamps.append(time.perf_counter())


def _stamp(reader: Any) -> None:
    reader.stage_clock.append(time.perf_counter())


_wrap(rest_worker.RequestReader, "headers_received", lambda r: setattr(r, "stage_clock", [time.perf_counter()]))
_wrap(rest_worker.RequestReader, "finish", _stamp)

_run = rest_worker.RequestReader._run


@functools.wraps(_run)
async def _timed_run(self: Any, body: bytes) -> None:
    stamps, cpu = self.stage_clock, list[float]()
    stamps.append(time.perf_counter())
    _by_connection[id(self.conn)] = (stamps, cpu)
    if self.environ is not None:  # made from the head; the request thread reads the clock from it
        self.environ[_KEY] = (stamps, cpu)
    await _run(self, body)


rest_worker.RequestReader._run = _timed_run  # type: ignore[method-assign]

_call_wsgi = rest_worker.call_wsgi


@functools.wraps(_call_wsgi)
def _timed_call_wsgi(app: Any, environ: dict) -> Any:
    with _span(environ.get(_KEY, ([], []))):
        return _call_wsgi(app, environ)


rest_worker.call_wsgi = _timed_call_wsgi

_predict_raw = EdgeModelServer.predict_raw


@functools.wraps(_predict_raw)
def _timed_predict_raw(self: Any, request: Any) -> Any:
    with _span(flask.request.environ.get(_KEY, ([], [])) if flask.has_request_context() else ([], [])):
        return _predict_raw(self, request)


EdgeModelServer.predict_raw = _timed_predict_raw  # type: ignore[method-assign]


def _resumed(conn: Any) -> None:
    timed = _by_connection.get(id(conn))
    if timed:
        timed[0].append(time.perf_counter())


_wrap(HTTP1Connection, "write_headers", _resumed)

_done = rest_worker.RequestReader._done


@functools.wraps(_done)
def _timed_done(self: Any) -> None:
    _done(self)
    timed = _by_connection.pop(id(self.conn), None)
    if timed is None:
        return
    stamps, cpu = timed
    stamps.append(time.perf_counter())
    if len(stamps) == 9 and len(cpu) == 4:  # a prediction that went the whole way
        spans = (cpu[1] - cpu[0], cpu[2] - cpu[1], cpu[3] - cpu[2])
        with _lock:
            _OUT.write(" ".join(f"{v:.9f}" for v in (*stamps, *spans)) + "\n")


rest_worker.RequestReader._done = _timed_done  # type: ignore[method-assign]
