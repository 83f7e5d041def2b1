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

import dataclasses
import functools
import os
from typing import Any, Callable
import io
import math
import multiprocessing
import signal
from multiprocessing.managers import SyncManager
from typing import IO, Any, Callable

import grpc
import orjson
import seldon_core
from flask import Blueprint, Flask, Request, Response, request
from flask.json.provider import DefaultJSONProvider
from flask_cors import CORS
from seldon_core import flask_utils, gunicorn_utils, microservice, wrapper
from seldon_core import metrics as seldon_metrics_module
from seldon_core.flask_utils import SeldonMicroserviceException
from seldon_core.metrics import SeldonMetrics
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge
from werkzeug.sansio.multipart import MultipartDecoder

from .http_worker import RestOptions

WRAPPER_VERSION = "1.17.1"

# "module:qualname" of wrapper code a workaround depends on -> what it relies on there.
RELIED_ON = {
    "seldon_core.wrapper:get_rest_microservice": "registers user_model.model_error_handler as a blueprint",
    "seldon_core.wrapper:get_grpc_server": "builds the gRPC server; looked up as a module attribute per worker",
    "seldon_core.metrics:SeldonMetrics.update": "called after every request, even with no metrics",
    "seldon_core.seldon_methods:health_status": "returns user_model.health_status_raw() when present",
    "seldon_core.seldon_methods:handle_raw_custom_metrics": "reads meta.metrics of a predict_raw response",
    # REST serving (section "REST serving" below)
    "seldon_core.microservice:_make_rest_server_prod": "runs the module global UserModelApplication with bind 0.0.0.0 and its gunicorn options",
    "seldon_core.microservice:_make_rest_metrics_server": "runs the module global StandaloneApplication with bind 0.0.0.0",
    "seldon_core.gunicorn_utils:StandaloneApplication.load_config": "copies the wrapper's options into gunicorn's cfg",
    "seldon_core.gunicorn_utils:UserModelApplication.load": "calls user_object.load() in each worker and returns the Flask app",
    "seldon_core.metrics:SeldonMetrics.__init__": "starts its Manager through the module global Manager",
    "seldon_core.wrapper:get_metrics_microservice": "calls CORS(app) on the metrics app",
    "seldon_core.flask_utils:get_request": "decodes JSON / form / multipart bodies; looked up as a seldon_core.wrapper global",
    "seldon_core.flask_utils:get_multi_form_data_request": "json.loads every multipart field but strData",
    # ... and the libraries under the wrapper that edgeservers/http_worker.py relies on (pinned in requirements.txt)
    "tornado.http1connection:HTTP1Connection._read_message_inner": (
        "header_timeout bounds request line + headers in total; no 100-continue once answered; delegate.finish only if unanswered"),
    "tornado.tcpserver:TCPServer._handle_connection": "wraps an accepted socket in an IOStream (used to take the backlog at stop)",
    "gunicorn.arbiter:Arbiter.stop": "closes the listeners, SIGTERMs the workers, waits graceful_timeout, then SIGKILL",
    "werkzeug.wrappers.request:Request.make_form_data_parser": "passes _get_file_stream, max_form_memory_size and max_form_parts to the parser",
    "werkzeug.sansio.multipart:MultipartDecoder.next_event": "in DATA without a full boundary, keeps the buffer from last_newline() on",
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

    Registering it switches the app to orjson, applies the REST limits and CORS (see "REST serving"
    below) and adds `routes` (e.g. the Open Inference Protocol's /v2 endpoints) beside Seldon's own.
    """
    hook = Blueprint("edgeservers", __name__)
    hook.record_once(_use_orjson)
    hook.record_once(_limit_rest_app)
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


# --- REST serving: worker, limits, bind address, CORS, shutdown -------------------------------------
#
# The wrapper runs gunicorn's sync worker (one thread per connection, 5000 s timeout), binds REST and
# metrics to 0.0.0.0, lets any Origin through CORS, parses multipart with Werkzeug's defaults (parts
# past 500 KB spooled to /tmp, 1000 parts) and answers form-decoding failures 500. Here: both gunicorn
# applications run edgeservers.http_worker.EdgeWorker with `RestOptions`, on the chosen address; the
# REST app gets a Request class with in-memory, bounded multipart parsing, CORS only for listed
# origins, and a get_request that answers every decoding failure 4xx; the metrics Manager survives
# the process-group SIGTERM so requests in flight can still hand their metrics over.

WORKER_CLASS = "edgeservers.http_worker.EdgeWorker"
WORKER_TIMEOUT = 30  # s without a heartbeat before the arbiter restarts a worker; the event loop beats every 0.2 s
MAX_FORM_PARTS = 16  # Seldon's multipart form has one part per SeldonMessage field
METRICS_OPTIONS = RestOptions(max_request_bytes=64 << 10, max_connections=100)

_rest_options = RestOptions()


def configure_rest(options: RestOptions) -> None:
    """Set the REST options, once, in the wrapper's main process (before it forks its servers)."""
    global _rest_options
    _rest_options = options


def rest_options() -> RestOptions:
    return _rest_options


def _bind(bind: str, address: str) -> str:
    port = bind.rsplit(":", 1)[1]
    host = f"[{address}]" if ":" in address and not address.startswith("[") else address
    return f"{host}:{port}"


class _EdgeGunicorn:
    """What both gunicorn applications change in the wrapper's options."""

    rest_options: RestOptions

    def _edge_config(self) -> None:
        cfg = self.cfg  # type: ignore[attr-defined]
        cfg.set("worker_class", WORKER_CLASS)
        cfg.set("timeout", WORKER_TIMEOUT)
        cfg.set("graceful_timeout", math.ceil(self.rest_options.graceful_timeout))
        cfg.set("bind", [_bind(b, self.rest_options.bind_address) for b in cfg.bind])


class EdgeUserModelApplication(_EdgeGunicorn, gunicorn_utils.UserModelApplication):
    """The wrapper's REST application, on EdgeWorker, with the component's RestOptions."""

    def load_config(self) -> None:
        self.rest_options = getattr(self.user_object, "rest_options", None) or _rest_options
        super().load_config()
        self._edge_config()


class EdgeStandaloneApplication(_EdgeGunicorn, gunicorn_utils.StandaloneApplication):
    """The wrapper's metrics application, on EdgeWorker: small bodies, the REST bind address, no CORS."""

    def load_config(self) -> None:
        self.rest_options = dataclasses.replace(
            METRICS_OPTIONS, bind_address=_rest_options.bind_address, graceful_timeout=_rest_options.graceful_timeout)
        super().load_config()
        self._edge_config()
        _set_cors(self.application, ())


class LimitedRequest(Request):
    """Flask's Request with multipart parsed in memory and bounded: the body is already size-limited by the
    worker, so nothing is spooled to /tmp (64Mi emptyDir in the chart)."""

    max_form_parts = MAX_FORM_PARTS

    def _get_file_stream(self, total_content_length: Any, content_type: Any, filename: Any = None,
                         content_length: Any = None) -> IO[bytes]:
        return io.BytesIO()


def _limit_rest_app(state: Any) -> None:
    app: Flask = state.app
    options = _rest_options
    app.request_class = LimitedRequest
    app.config["MAX_CONTENT_LENGTH"] = options.max_request_bytes
    LimitedRequest.max_form_memory_size = options.max_request_bytes
    _set_cors(app, options.cors_origins)


def _set_cors(app: Flask, origins: tuple[str, ...]) -> None:
    """Undo the wrapper's CORS(app) (every origin, every method); with `origins`, allow just those."""
    funcs = app.after_request_funcs.get(None, [])
    funcs[:] = [f for f in funcs if getattr(f, "__name__", "") != "cors_after_request"]
    for name in ("handle_exception", "handle_user_exception"):  # flask-cors wraps these on the instance
        app.__dict__.pop(name, None)
    if origins:
        CORS(app, origins=list(origins), methods=["GET", "POST", "OPTIONS"], supports_credentials=False)


class RequestRejected(SeldonMicroserviceException):
    """A request refused by a limit or a decoding failure: 4xx with Seldon's error body and the HTTP code in it."""

    def __init__(self, status_code: int, message: str, reason: str):
        super().__init__(message, status_code=status_code, reason=reason)

    def to_dict(self) -> dict:
        return {"status": {"status": 1, "info": self.message, "code": self.status_code, "reason": self.reason}}


_seldon_get_request = flask_utils.get_request


def _count_values(text: bytes | str) -> int:
    return text.count(b"," if isinstance(text, bytes) else ",") + 1


def _check_values(count: int, where: str) -> None:
    limit = _rest_options.max_json_values
    if limit is not None and count > limit:
        raise RequestRejected(413, (
            f"{where} holds about {count} JSON values (counted by commas), more than {limit}: twice the model's "
            f"input size plus {JSON_VALUES_SLACK} (set by the model, no parameter); send the tensor as "
            "tftensor or the image as binData"), "TOO_MANY_VALUES")


def check_json_body() -> None:
    """For routes that parse JSON themselves (e.g. /v2): refuse a body with too many values before parsing
    it (raises RequestRejected, which the wrapper's app answers 413)."""
    _check_values(_count_values(request.get_data(cache=True)), "the JSON body")


@functools.wraps(_seldon_get_request)
def _get_request(skip_decoding: bool = False) -> Any:
    """Seldon's get_request with limits checked before parsing and every decoding failure answered 4xx."""
    content_type = (request.content_type or "").lower()
    try:
        if "multipart/form-data" in content_type:
            form = request.form  # parses (in memory, bounded by LimitedRequest)
            _check_values(sum(_count_values(v) for v in form.values()), "the multipart form fields")
        elif "json" in content_type or not content_type:
            check_json_body()
        else:
            _check_values(sum(_count_values(v) for v in request.form.values()), "the form fields")
        return _seldon_get_request(skip_decoding)
    except RequestEntityTooLarge:
        raise RequestRejected(413, (
            f"the form is larger than allowed: at most {MAX_FORM_PARTS} parts (fixed: one per SeldonMessage "
            f"field) and {_rest_options.max_request_bytes} bytes (the parameter max_request_bytes)"), "REQUEST_TOO_LARGE") from None
    except HTTPException as e:
        raise RequestRejected(e.code or 400, f"the request could not be read: {e.description}", "MICROSERVICE_BAD_DATA") from None
    except (ValueError, RecursionError, UnicodeDecodeError, TypeError) as e:
        what = type(e).__name__ if isinstance(e, RecursionError) else str(e)[:200]
        raise RequestRejected(400, f"a form field or parameter is not valid JSON ({what}): "
                                   "send binData as a file part, other fields as JSON", "MICROSERVICE_BAD_DATA") from None


JSON_VALUES_SLACK = 4096


def json_values_limit(input_elements: int | None) -> int | None:
    """The JSON values a request may hold: twice the model's input elements plus some slack (None: no bound)."""
    return None if input_elements is None else 2 * input_elements + JSON_VALUES_SLACK


def _manager_ignoring_termination() -> SyncManager:
    """multiprocessing.Manager() whose process ignores SIGTERM/SIGINT: a process-group SIGTERM (the pod
    stopping) no longer kills it under the requests in flight. It ends when the main process exits
    (multiprocessing's exit handler shuts it down; on Linux it also gets SIGKILL if its parent dies)."""
    manager = SyncManager(ctx=multiprocessing.get_context())
    manager.start(_ignore_termination)
    return manager


def _ignore_termination() -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _linear_multipart_data() -> None:
    """Backport of the fix for CVE-2023-46136 (Werkzeug 2.3.8 / 3.0.1) to the 2.2.3 that seldon-core pins.

    In a file part's data, while no complete boundary has arrived, the decoder hands over the data up to
    the last CR or LF (a boundary may start there) and keeps the rest for the next round. A part that
    begins with CR or LF and has none after is kept whole and searched again after every chunk: quadratic
    (a crafted 16 MiB part: 3.2 s of CPU instead of 0.13 s here). As in the fix: when the last CR/LF is
    further from the end than a boundary is long and no boundary is in the buffer, hand everything over.
    """
    last_newline = MultipartDecoder.last_newline

    @functools.wraps(last_newline)
    def linear_last_newline(self: MultipartDecoder) -> int:
        index = last_newline(self)
        if len(self.buffer) - index > len(b"\r\n--" + self.boundary) and self.buffer.find(b"--" + self.boundary) == -1:
            return len(self.buffer)
        return index

    MultipartDecoder.last_newline = linear_last_newline  # type: ignore[method-assign]


def _install_rest_serving() -> None:
    _linear_multipart_data()
    microservice.UserModelApplication = EdgeUserModelApplication  # type: ignore[misc]
    microservice.StandaloneApplication = EdgeStandaloneApplication  # type: ignore[misc]
    wrapper.get_request = _get_request
    seldon_metrics_module.Manager = _manager_ignoring_termination


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
    _install_rest_serving()


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
