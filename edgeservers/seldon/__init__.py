"""The adapter to seldon-core 1.17.1's wrapper (`seldon-core-microservice`): the Seldon component both servers
are, and everything changed inside the wrapper, one module per concern.

The wrapper offers a model few hooks: it builds the component (component.py), registers its
`model_error_handler` as a Flask blueprint on its REST app, calls `health_status_raw()` when present, and
otherwise owns the processes, ports and servers. `install()` runs once, in the wrapper's main process, from the
component's `__init__`, before the wrapper forks its servers, so that every part inherits the patches:

- rest_app.py: the REST app (orjson, limits, CORS, decoding failures answered 4xx) and its gunicorn application;
- rest_worker.py: the REST worker (tornado's HTTP/1.1 reading, threads for the app, graceful stop);
- grpc.py: the gRPC servers (message limit, reflection, bind address, error codes) and workers;
- metrics.py: Seldon's custom metrics, cheaper and on threads of the main process;
- supervisor.py: every part a watched child; readiness that tells the truth;
- patches.py: every patch and reliance, with the source hash of the code it was written against;
- state.py: what the adapter keeps while the server runs.
"""

from __future__ import annotations

import os

import seldon_core

from . import grpc, metrics, rest_app, state, supervisor

WRAPPER_VERSION = "1.17.1"


def install() -> state.AdapterState:
    """Apply every change to the wrapper once (idempotent: tests build several components) and return the state."""
    adapter = state.current()
    if not adapter.installed:
        adapter.installed = True
        rest_app.install()
        grpc.install()
        metrics.install()
        supervisor.install()
    return adapter


def _number(name: str, default: int) -> int:
    """An integer from the environment, read the way the wrapper's argument parser reads it."""
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        return default


def one_process() -> bool:
    """Whether the main process serves REST and gRPC itself, from one model pool: one REST worker that never
    restarts (GUNICORN_WORKERS=1, no GUNICORN_MAX_REQUESTS: the chart's defaults) and GRPC_WORKERS=1.
    GRPC_WORKERS above 1 forks gRPC workers, each with its own copy of the model, as the wrapper does."""
    return (
        _number("GUNICORN_WORKERS", 1) == 1
        and not _number("GUNICORN_MAX_REQUESTS", 0)
        and _number("GRPC_WORKERS", 1) == 1
    )


def concurrent_requests() -> int:
    """How many requests one process of the server may run at once: its REST threads (GUNICORN_THREADS, 1 under
    FLASK_SINGLE_THREADED) and its gRPC threads (GRPC_THREADS, when GRPC_WORKERS > 0): both together when one
    process serves both, else the more of the two."""
    rest = 1 if _number("FLASK_SINGLE_THREADED", 0) else _number("GUNICORN_THREADS", 1)
    grpc_threads = _number("GRPC_THREADS", 1) if _number("GRPC_WORKERS", 1) > 0 else 0
    return max(1, rest + grpc_threads if one_process() else max(rest, grpc_threads))


def wrapper_version() -> str:
    return seldon_core.__version__
