"""Seldon's custom metrics, cheaper and in fewer processes: updates skipped when a response hands over nothing,
TIMER buckets found by bisection, the metrics store and its Prometheus endpoint on threads of the main process;
and hand-over for what the wrapper does not run itself (the Open Inference Protocol, background uploads).

Seldon keeps custom metrics in a multiprocessing Manager (a forked process of its own) and serves them from a
second gunicorn server (an arbiter and a worker: two more forked copies of the main process). Here the
Manager's server runs on threads of the main process and the Prometheus endpoint is the wrapper's own
metrics app (`wrapper.get_metrics_microservice`: same port, path and text; the REST bind address, no CORS,
bounded as the metrics worker was) on a werkzeug thread beside it, reading the Manager's dict directly: three
processes fewer (docs/architecture.md). Workers still reach the store through the Manager's proxies and
socket; the threads are blocked in accept/select when the supervisor forks, and a forked part never touches
their objects. They end with the main process, after the parts have stopped.
"""

from __future__ import annotations

import bisect
import functools
import os
import secrets
import sys
import threading
from collections.abc import Callable
from multiprocessing.managers import AcquirerProxy, DictProxy, State, SyncManager  # type: ignore[attr-defined]
from typing import Any

from flask import Flask
from seldon_core import metrics as seldon_metrics_module
from seldon_core import microservice, wrapper
from seldon_core.metrics import SeldonMetrics
from werkzeug.serving import ThreadedWSGIServer, WSGIRequestHandler

from . import state
from .patches import patch, relies_on
from .rest_app import set_cors
from .rest_worker import RestOptions

METRICS_OPTIONS = RestOptions(max_request_bytes=64 << 10, max_connections=100)

relies_on(
    "seldon_core.seldon_methods:handle_raw_custom_metrics",
    "7a7449219b47c5b2",
    "reads meta.metrics of a predict_raw response",
)
relies_on(
    "seldon_core.metrics:SeldonMetrics.collect",
    "5d56ecbee53c4e9b",
    "reads only self._lock, self.data, self._extra_default_labels (what _ServedMetrics gives it)",
)
relies_on("seldon_core.wrapper:get_metrics_microservice", "71829aeb328669a8", "calls CORS(app) on the metrics app")


def hand_over(metrics: list[dict], method: str = "predict") -> None:
    """Give metrics to this process's SeldonMetrics, as the wrapper does with a v1 response's meta.metrics:
    for what the wrapper does not run itself (the Open Inference Protocol's routes and services, uploads in
    the background). Before the wrapper has built its server in this process, a no-op."""
    store = state.current().process_metrics
    if metrics and store is not None:
        store.update(metrics, method)


def install() -> None:
    _keep_each_process_store()
    _skip_empty_updates()
    _bucket_timers_by_bisection()
    _serve_in_main_process()


def _keep_each_process_store() -> None:
    """Keep the SeldonMetrics the wrapper builds each server with (for hand_over), and every one created
    (the supervisor watches their Managers)."""
    get_rest_microservice = wrapper.get_rest_microservice

    @functools.wraps(get_rest_microservice)
    def keeping_rest(user_model: Any, seldon_metrics: SeldonMetrics) -> Flask:
        state.current().process_metrics = seldon_metrics
        return get_rest_microservice(user_model, seldon_metrics)

    patch(
        wrapper,
        "get_rest_microservice",
        keeping_rest,
        source_sha="83ef203c4f7cfc96",
        why="builds the REST app with the SeldonMetrics of the process; registers user_model.model_error_handler",
    )
    init = SeldonMetrics.__init__

    @functools.wraps(init)
    def init_and_keep(self: SeldonMetrics, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        state.current().metrics_stores.append(self)

    patch(
        SeldonMetrics,
        "__init__",
        init_and_keep,
        source_sha="af793ef047852eb4",
        why="starts its Manager (self._manager) through the module global Manager",
    )


_update_lock = threading.Lock()


def _new_update_lock() -> None:
    global _update_lock
    _update_lock = threading.Lock()  # a forked child starts with its own, never one another thread held


os.register_at_fork(after_in_child=_new_update_lock)


def _skip_empty_updates() -> None:
    """The wrapper calls SeldonMetrics.update after every request, even with no metrics, and each call is
    four round trips to the Manager; with MetricsBatch most responses hand over nothing. One update at a time
    per process: each reads the worker's counts, adds to them and writes them back, so a background thread's
    count (uploads, through `hand_over`) beside a request's hand-over would otherwise lose one of the two."""
    update = SeldonMetrics.update

    @functools.wraps(update)
    def update_unless_empty(self: SeldonMetrics, custom_metrics: list[dict], method: str) -> None:
        if custom_metrics:
            with _update_lock:
                update(self, custom_metrics, method)

    patch(
        SeldonMetrics,
        "update",
        update_unless_empty,
        source_sha="1c71ad114bf12494",
        why="called after every request, even with no metrics; reads, changes and writes back the worker's dict",
    )


def _bucket_timers_by_bisection() -> None:
    """A TIMER value's histogram bucket by bisection instead of numpy.histogram of a one-element list over the 52
    bucket edges: the same buckets (numpy's: [edge, next edge), the last one closed)."""

    def update_hist(x: float, vals: list, sumv: float) -> tuple[list, float]:
        edges = seldon_metrics_module.BINS
        bucket = min(bisect.bisect_right(edges, x), len(edges) - 1) - 1  # x == the last edge: the last bucket
        vals = list(vals)
        if bucket >= 0:  # below the first edge: in no bucket, as numpy counts it
            vals[bucket] += 1
        return vals, sumv + x

    patch(
        SeldonMetrics,
        "_update_hist",
        staticmethod(update_hist),
        source_sha="97aea11bcd6ccf39",
        why="(x, vals, sumv) -> (vals + the bucket of x by numpy.histogram over BINS, sumv + x)",
    )


# --- the store and the endpoint on threads of the main process -------------------------------------------


class MetricsManager(SyncManager):
    """The Manager behind SeldonMetrics, serving from threads of the process that creates it."""

    def start_in_process(self) -> None:
        server = self.get_server()  # listens on a new unix socket, as a started Manager's process would
        server.stop_event = threading.Event()  # type: ignore[attr-defined]  # as serve_forever sets it; never set
        self._address = server.address
        self._state.value = State.STARTED  # type: ignore[attr-defined]
        threading.Thread(target=server.accepter, name="metrics-manager", daemon=True).start()
        # A forked process has no accepter thread, yet its copy of the listening socket kept the (abstract)
        # address reachable after this process ended: a worker's worker_exit hook (SeldonMetrics.clear)
        # then connected to that copy and waited for an answer forever. Each child closes its copy (the
        # socket only: the address is this process's to release).
        os.register_at_fork(after_in_child=server.listener._listener._socket.close)  # type: ignore[attr-defined]

    def shutdown(self) -> None:  # type: ignore[override]  # SeldonMetrics.__del__ calls it; the threads end with the process
        pass


def _recorded(typeid: str, factory: Callable[[], Any]) -> Callable[[], Any]:
    def create() -> Any:
        obj = factory()
        state.current().manager_objects[typeid] = obj
        return obj

    return create


MetricsManager.register("dict", _recorded("dict", dict), DictProxy)
MetricsManager.register("Lock", _recorded("Lock", threading.Lock), AcquirerProxy)


class _ServedMetrics(SeldonMetrics):
    """SeldonMetrics' own exposition (collect, generate_metrics) over the Manager's dict and lock, without IPC."""

    def __init__(self, extra_default_labels: dict[str, str]):  # no Manager of its own
        self.worker_id_func = os.getpid
        self._extra_default_labels = extra_default_labels

    @property
    def data(self) -> dict:
        return state.current().manager_objects["dict"]

    @property
    def _lock(self) -> Any:
        return state.current().manager_objects["Lock"]

    def __del__(self) -> None:
        pass


class _MetricsRequestHandler(WSGIRequestHandler):
    access_log = False  # gunicorn's metrics server logged no access unless --access-log
    timeout = METRICS_OPTIONS.header_timeout  # a connection silent this long is closed

    def log_request(self, *args: Any, **kwargs: Any) -> None:
        if self.access_log:
            super().log_request(*args, **kwargs)


class _BoundedServer(ThreadedWSGIServer):
    """One thread per connection, at most METRICS_OPTIONS.max_connections at once (more are closed at once)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._slots = threading.BoundedSemaphore(METRICS_OPTIONS.max_connections)
        super().__init__(*args, **kwargs)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


def _serve_metrics(host: str, port: int, access_log: bool, extra_default_labels: dict[str, str]) -> threading.Thread:
    """Serve the wrapper's metrics app on host:port from a daemon thread (a taken port raises here, at start)."""
    app = wrapper.get_metrics_microservice(_ServedMetrics(extra_default_labels))
    set_cors(app, ())
    app.config["MAX_CONTENT_LENGTH"] = METRICS_OPTIONS.max_request_bytes
    handler = type("MetricsRequestHandler", (_MetricsRequestHandler,), {"access_log": access_log})
    server = _BoundedServer(host, port, app, handler=handler)
    thread = threading.Thread(target=server.serve_forever, name="metrics-http", daemon=True)
    thread.start()
    return thread


def metrics_manager() -> MetricsManager:
    """What SeldonMetrics gets for `Manager()`: on Linux listening on an abstract unix socket (no file, so no
    limit from a long TMPDIR: a socket path is at most 107 bytes, and multiprocessing puts it in TMPDIR);
    clients still authenticate with the Manager's key."""
    address = f"\0edgeservers-metrics-{os.getpid()}-{secrets.token_hex(8)}" if sys.platform == "linux" else None
    manager = MetricsManager(address=address)
    manager.start_in_process()
    return manager


def _serve_in_main_process() -> None:
    patch(
        seldon_metrics_module,
        "Manager",
        metrics_manager,
        target="seldon_core.metrics:SeldonMetrics.__init__",
        source_sha="af793ef047852eb4",
        why="starts its Manager (self._manager) through the module global Manager",
    )
    make_rest_metrics_server = microservice._make_rest_metrics_server

    @functools.wraps(make_rest_metrics_server)
    def in_main_process(seldon_metrics: SeldonMetrics, args: Any) -> Callable[[], None] | None:
        """Serve the metrics from a thread of the main process and have the wrapper start no metrics process
        (None); the wrapper's own server in debug mode (Flask's development server)."""
        if args.debug:
            return make_rest_metrics_server(seldon_metrics, args)
        labels = dict(seldon_metrics._extra_default_labels)
        host = state.current().rest_options.bind_address.strip("[]")
        _serve_metrics(host, args.metrics_port, bool(args.access_log), labels)
        return None

    patch(
        microservice,
        "_make_rest_metrics_server",
        in_main_process,
        source_sha="6459ff2f1b453fcf",
        why="replaced: ran a gunicorn arbiter + worker for the metrics app on 0.0.0.0",
    )
