"""Everything edgeservers does inside seldon-core 1.17.1's wrapper (`seldon-core-microservice`), in one place.

The wrapper offers a model few hooks: it registers the component's `model_error_handler` as a Flask
blueprint on its REST app, calls `health_status_raw()` for /health/status when the component has it,
and otherwise owns the processes, ports and servers. Each workaround below names the wrapper code it
relies on in `RELIED_ON`; tests/test_seldon_compat.py fails when the installed wrapper is not the one
they were written for (its version, and the source of every function named there), so an upgrade is
a deliberate change, not a surprise.

`install()` runs once, in the wrapper's main process, from the component's `__init__`: before the
wrapper forks its REST, gRPC and metrics processes, so every one of them inherits the patches.
"""

from __future__ import annotations

import functools
import os
import threading
from multiprocessing.managers import AcquirerProxy, DictProxy, State, SyncManager  # type: ignore[attr-defined]
from typing import Any, Callable

import grpc
import orjson
import seldon_core
from flask import Blueprint, Flask, Response
from flask.json.provider import DefaultJSONProvider
from seldon_core import metrics as seldon_metrics_module
from seldon_core import microservice, wrapper
from seldon_core.metrics import SeldonMetrics
from werkzeug.serving import WSGIRequestHandler, make_server

WRAPPER_VERSION = "1.17.1"

# "module:qualname" of wrapper code a workaround depends on -> what it relies on there.
RELIED_ON = {
    "seldon_core.wrapper:get_rest_microservice": "registers user_model.model_error_handler as a blueprint",
    "seldon_core.wrapper:get_grpc_server": "builds the gRPC server; looked up as a module attribute per worker",
    "seldon_core.metrics:SeldonMetrics.update": "called after every request, even with no metrics",
    "seldon_core.seldon_methods:health_status": "returns user_model.health_status_raw() when present",
    "seldon_core.seldon_methods:handle_raw_custom_metrics": "reads meta.metrics of a predict_raw response",
    # memory (below): the metrics store and endpoint on threads of the main process
    "seldon_core.metrics:SeldonMetrics.__init__": "creates its store with seldon_core.metrics.Manager(): .Lock() and .dict()",
    "seldon_core.metrics:SeldonMetrics.collect": "reads only self._lock, self.data, self._extra_default_labels",
    "seldon_core.microservice:main": "builds the component, then SeldonMetrics, then calls _make_rest_metrics_server "
    "(a module attribute) and starts no metrics process when it returns None",
    "seldon_core.microservice:_make_rest_metrics_server": "the metrics server: get_metrics_microservice on args.metrics_port",
    "seldon_core.microservice:start_servers": "skips the metrics process when metrics_target is None",
}

GrpcRegistrar = Callable[[grpc.Server], None]
_grpc_registrars: list[GrpcRegistrar] = []


# --- REST: orjson, extra routes --------------------------------------------------------------

_ORJSON_OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS


class OrjsonProvider(DefaultJSONProvider):
    """Flask's JSON provider with orjson underneath: bodies parse about 3x faster than with `json`,
    and numpy arrays in responses are written directly, without `tolist()`. Seldon's app parses every
    request body and writes every response through it; for an image model's `data.ndarray` that is
    tens of milliseconds per request on a small CPU, more than the inference."""

    def dumps(self, obj: Any, **kwargs: Any) -> str:
        return orjson.dumps(obj, default=self.default, option=_ORJSON_OPTIONS).decode()

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        return orjson.loads(s)  # orjson.JSONDecodeError is a ValueError: Flask answers 400 as before

    def response(self, *args: Any, **kwargs: Any) -> Response:
        body = orjson.dumps(self._prepare_response_obj(args, kwargs), default=self.default, option=_ORJSON_OPTIONS)
        return self._app.response_class(body, mimetype=self.mimetype)


def rest_blueprint(*routes: Blueprint) -> Blueprint:
    """The component's `model_error_handler`: the one blueprint the wrapper registers on its REST app.

    Registering it switches the app to orjson and adds `routes` (e.g. the Open Inference Protocol's
    /v2 endpoints) beside Seldon's own.
    """
    hook = Blueprint("edgeservers", __name__)
    hook.record_once(_use_orjson)
    for child in routes:
        hook.register_blueprint(child)
    return hook


def _use_orjson(state: Any) -> None:
    app: Flask = state.app
    app.json = OrjsonProvider(app)


# --- gRPC: extra services on the wrapper's server ------------------------------------------------


def add_grpc_services(registrar: GrpcRegistrar) -> None:
    """Have `registrar(server)` add services to the gRPC server of every gRPC worker the wrapper starts."""
    _grpc_registrars.append(registrar)


_seldon_get_grpc_server = wrapper.get_grpc_server


@functools.wraps(_seldon_get_grpc_server)
def _get_grpc_server(*args: Any, **kwargs: Any) -> grpc.Server:
    server = _seldon_get_grpc_server(*args, **kwargs)
    for registrar in _grpc_registrars:
        registrar(server)
    return server


# --- metrics ---------------------------------------------------------------------------------


def _skip_empty_metric_updates() -> None:
    """Make the wrapper skip its metrics update when a response hands over no metrics.

    The wrapper calls `SeldonMetrics.update` after every request, even with an empty list, and each
    call is four round trips to its Manager process: about 3 ms per request here, half of a small
    model's whole gRPC request. With `metrics.MetricsBatch` most responses hand over nothing.
    """
    update = SeldonMetrics.update

    @functools.wraps(update)
    def update_unless_empty(self: SeldonMetrics, custom_metrics: list[dict], method: str) -> None:
        if custom_metrics:
            update(self, custom_metrics, method)

    SeldonMetrics.update = update_unless_empty  # type: ignore[method-assign]


# --- memory: metrics store and endpoint on threads of the main process ----------------------------
#
# The wrapper keeps custom metrics in a multiprocessing Manager (a forked process of its own) and serves
# them from a second gunicorn server: an arbiter and a worker, two more forked copies of the main
# process. Each such process costs 15-30 MB (PSS) on its own, however little it does: its writes copy
# the pages it shares with the main process. Here the Manager's server runs on threads of the wrapper's
# main process (the REST gunicorn arbiter, which otherwise only waits on its worker), and the Prometheus
# endpoint is the wrapper's own metrics app (`wrapper.get_metrics_microservice`: same port, path and
# text) on a werkzeug thread beside it, reading the Manager's dict directly: three processes fewer.
# Workers still reach the store through the Manager's proxies and socket, as before; the threads are
# blocked in accept/select when the arbiter forks, and a forked worker never touches their objects.

METRICS_HOST = "0.0.0.0"  # as the wrapper binds its metrics server


class MetricsManager(SyncManager):
    """The Manager behind SeldonMetrics, serving from threads of the process that creates it."""

    def start_in_process(self) -> None:
        server = self.get_server()  # listens on a new unix socket, as a started Manager's process would
        server.stop_event = threading.Event()  # type: ignore[attr-defined]  # as serve_forever sets it; never set
        self._address = server.address
        self._state.value = State.STARTED  # type: ignore[attr-defined]
        threading.Thread(target=server.accepter, name="metrics-manager", daemon=True).start()

    def shutdown(self) -> None:  # type: ignore[override]  # SeldonMetrics.__del__ calls it; the threads end with the process
        pass


_manager_objects: dict[str, Any] = {}  # the dict and the lock SeldonMetrics created on the Manager


def _recorded(typeid: str, factory: Callable[[], Any]) -> Callable[[], Any]:
    def create() -> Any:
        obj = factory()
        _manager_objects[typeid] = obj
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
        return _manager_objects["dict"]

    @property
    def _lock(self) -> Any:
        return _manager_objects["Lock"]

    def __del__(self) -> None:
        pass


class _MetricsRequestHandler(WSGIRequestHandler):
    access_log = False  # gunicorn's metrics server logged no access unless --access-log

    def log_request(self, *args: Any, **kwargs: Any) -> None:
        if self.access_log:
            super().log_request(*args, **kwargs)


def _serve_metrics(host: str, port: int, access_log: bool, extra_default_labels: dict[str, str]) -> threading.Thread:
    """Serve the wrapper's metrics app on host:port from a daemon thread (a taken port raises here, at start)."""
    app = wrapper.get_metrics_microservice(_ServedMetrics(extra_default_labels))
    handler = type("MetricsRequestHandler", (_MetricsRequestHandler,), {"access_log": access_log})
    server = make_server(host, port, app, threaded=True, request_handler=handler)
    thread = threading.Thread(target=server.serve_forever, name="metrics-http", daemon=True)
    thread.start()
    return thread


def _metrics_manager() -> MetricsManager:
    """What SeldonMetrics gets for `Manager()`."""
    manager = MetricsManager()
    manager.start_in_process()
    return manager


_seldon_make_rest_metrics_server = microservice._make_rest_metrics_server


@functools.wraps(_seldon_make_rest_metrics_server)
def _make_rest_metrics_server(seldon_metrics: SeldonMetrics, args: Any) -> Callable[[], None] | None:
    """Serve the metrics from a thread of the main process and have the wrapper start no metrics process
    (None); the wrapper's own server in debug mode (Flask's development server) or for another Manager."""
    if args.debug or not isinstance(getattr(seldon_metrics, "_manager", None), MetricsManager):
        return _seldon_make_rest_metrics_server(seldon_metrics, args)
    labels = dict(seldon_metrics._extra_default_labels)
    _serve_metrics(METRICS_HOST, args.metrics_port, bool(args.access_log), labels)
    return None


def _serve_metrics_in_main_process() -> None:
    seldon_metrics_module.Manager = _metrics_manager
    microservice._make_rest_metrics_server = _make_rest_metrics_server


# --- installation ------------------------------------------------------------------------------

_installed = False


def install() -> None:
    """Apply every workaround once, in the wrapper's main process (idempotent: tests build several components)."""
    global _installed
    if _installed:
        return
    _installed = True
    _skip_empty_metric_updates()
    wrapper.get_grpc_server = _get_grpc_server
    _serve_metrics_in_main_process()


def concurrent_requests() -> int:
    """How many requests one worker of the wrapper may run at once: its REST threads (GUNICORN_THREADS,
    1 under FLASK_SINGLE_THREADED) or its gRPC threads (GRPC_THREADS, when GRPC_WORKERS > 0), read
    from the environment the way the wrapper's own argument parser does."""

    def number(name: str, default: int) -> int:
        try:
            return int(os.environ.get(name, default))
        except ValueError:
            return default

    rest = 1 if number("FLASK_SINGLE_THREADED", 0) else number("GUNICORN_THREADS", 1)
    grpc_threads = number("GRPC_THREADS", 1) if number("GRPC_WORKERS", 1) > 0 else 0
    return max(1, rest, grpc_threads)


def wrapper_version() -> str:
    return seldon_core.__version__
