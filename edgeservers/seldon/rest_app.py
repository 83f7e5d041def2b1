"""Everything edgeservers does inside seldon-core 1.17.1's wrapper (`seldon-core-microservice`), in one place.

The wrapper offers a model few hooks: it registers the component's `model_error_handler` as a Flask
blueprint on its REST app, calls `health_status_raw()` for /health/status when the component has it,
and otherwise owns the processes, ports and servers (here its gRPC server factory, its gRPC worker
start-up and its start_servers are replaced: see the sections on gRPC limits and supervision). Each workaround below names the wrapper code it
relies on in `RELIED_ON`; tests/test_seldon_compat.py fails when the installed wrapper is not the one
they were written for (its version, and the source of every function named there), so an upgrade is
a deliberate change, not a surprise.

`install()` runs once, in the wrapper's main process, from the component's `__init__`: before the
wrapper forks its REST, gRPC and metrics processes, so every one of them inherits the patches.
"""

from __future__ import annotations

import bisect
import contextlib
import ctypes
import functools
import io
import math
import mmap
import multiprocessing
import multiprocessing.connection
import os
import secrets
import signal
import socket
import sys
import threading
import time
import types
from collections.abc import Callable, Iterator
from multiprocessing.managers import AcquirerProxy, DictProxy, State, SyncManager  # type: ignore[attr-defined]
from typing import IO, Any, ClassVar

import grpc
import numpy as np
import orjson
import pybase64
import seldon_core
from flask import Blueprint, Flask, Request, Response, request
from flask.json.provider import DefaultJSONProvider
from flask_cors import CORS
from gunicorn import sock as gunicorn_sock
from seldon_core import flask_utils, gunicorn_utils, microservice, wrapper
from seldon_core import metrics as seldon_metrics_module
from seldon_core.flask_utils import ANNOTATION_GRPC_MAX_MSG_SIZE, SeldonMicroserviceException
from seldon_core.metrics import SeldonMetrics
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge
from werkzeug.sansio.multipart import MultipartDecoder
from werkzeug.serving import ThreadedWSGIServer, WSGIRequestHandler

from .errors import GRPC_CODES
from .http_worker import EdgeWorker, RestOptions, error_body

WRAPPER_VERSION = "1.17.1"

# "module:qualname" of wrapper code a workaround depends on -> what it relies on there.
RELIED_ON = {
    "seldon_core.wrapper:get_rest_microservice": "registers user_model.model_error_handler as a blueprint",
    "seldon_core.wrapper:get_grpc_server": (
        "builds the gRPC server; looked up as a module attribute per worker; message limits only from the "
        "seldon.io/grpc-max-message-size annotation; reflection through the module global `reflection`"
    ),
    "seldon_core.metrics:SeldonMetrics.update": "called after every request, even with no metrics",
    "seldon_core.metrics:SeldonMetrics._update_hist": "(x, vals, sumv) -> (vals + the bucket of x by numpy.histogram over BINS, sumv + x)",
    "seldon_core.seldon_methods:health_status": "returns user_model.health_status_raw() when present",
    "seldon_core.seldon_methods:handle_raw_custom_metrics": "reads meta.metrics of a predict_raw response",
    # REST serving (section "REST serving" below)
    "seldon_core.microservice:_make_rest_server_prod": (
        "runs the module global UserModelApplication with bind 0.0.0.0 and its gunicorn options; builds the REST "
        "app with wrapper.get_rest_microservice(user_object, seldon_metrics), looked up as a module attribute"
    ),
    "seldon_core.microservice:_make_rest_metrics_server": "replaced: ran a gunicorn arbiter + worker for the metrics app on 0.0.0.0",
    "seldon_core.gunicorn_utils:UserModelApplication.load": "calls user_object.load() in each worker and returns the Flask app",
    "seldon_core.metrics:SeldonMetrics.__init__": "starts its Manager (self._manager) through the module global Manager",
    "seldon_core.wrapper:get_metrics_microservice": "calls CORS(app) on the metrics app",
    "seldon_core.flask_utils:get_request": "decodes JSON / form / multipart bodies; looked up as a seldon_core.wrapper global",
    "seldon_core.flask_utils:get_multi_form_data_request": (
        "json.loads every multipart field but strData; base64-encodes file parts with the module global base64's b64encode"
    ),
    # ... and the libraries under the wrapper that edgeservers/http_worker.py relies on (pinned in requirements.txt)
    "tornado.http1connection:HTTP1Connection._read_message_inner": (
        "header_timeout bounds request line + headers in total; no 100-continue once answered; delegate.finish only if unanswered"
    ),
    "tornado.tcpserver:TCPServer._handle_connection": "wraps an accepted socket in an IOStream (used to take the backlog at stop)",
    "tornado.http1connection:HTTP1Connection._parse_headers": (
        "(data) -> (start line, headers) of each request head, called through the instance (http_worker.crlf_only wraps it)"
    ),
    "tornado.http1connection:HTTP1Connection.detach": "takes the stream; _read_message_inner then reads nothing more",
    "tornado.httputil:HTTPServerRequest.__init__": "raises HTTPInputError for a missing, invalid or repeated Host",
    "gunicorn.arbiter:Arbiter.stop": "closes the listeners, SIGTERMs the workers, waits graceful_timeout, then SIGKILL",
    "gunicorn.workers.base:Worker.__init__": "(age, ppid, sockets, app, timeout, cfg, log): does nothing to the process",
    "gunicorn.workers.base:Worker.init_process": (
        "signal handlers, app.wsgi() (the wrapper's load()), post_worker_init, then run(): also without an arbiter"
    ),
    "werkzeug.wrappers.request:Request.make_form_data_parser": "passes _get_file_stream, max_form_memory_size and max_form_parts to the parser",
    "werkzeug.sansio.multipart:MultipartDecoder.next_event": "in DATA without a full boundary, keeps the buffer from last_newline() on",
    # gRPC limits, reflection, bind address; supervision (sections below)
    "seldon_core.wrapper:SeldonModelGRPC.Predict": "the Model/Predict handler; any exception becomes UNKNOWN",
    "seldon_core.microservice:main": (
        "builds the component (so install() runs) and SeldonMetrics (its Manager) before calling the module "
        "globals _make_grpc_server(user_object, seldon_metrics, args, annotations), "
        "_make_rest_metrics_server(seldon_metrics, args) (section memory: None, no metrics process) and "
        "start_servers(rest, grpc, custom, metrics)"
    ),
    "seldon_core.microservice:start_servers": (
        "replaced (its targets kept): REST's arbiter ran in the main process, nothing watched; the REST target "
        "is the closure _make_rest_server_prod returns"
    ),
    "seldon_core.microservice:_make_grpc_server": "replaced: reserved the port, bound 0.0.0.0, forked and joined the workers",
    "seldon_core.microservice:_run_grpc_server": (
        "a gRPC worker: get_grpc_server(user_object, seldon_metrics, annotations=...), load(), add_insecure_port(bind_address), "
        "_wait_forever() (KeyboardInterrupt stops it)"
    ),
    "seldon_core.microservice:_reserve_grpc_port": "binds the port with SO_REUSEPORT for the workers",
    # memory (section "memory" below): the metrics store and endpoint on threads of the main process
    "seldon_core.metrics:SeldonMetrics.collect": "reads only self._lock, self.data, self._extra_default_labels",
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


_JSON_SPACE = frozenset(b" \t\r\n")
ONE_STRING_MIN_BYTES = 64 << 10  # below this orjson is as quick


def one_string_member(body: bytes) -> dict[str, str] | None:
    """`{"<key>": "<string>"}` split without a parser, when the string holds no escape and only printable
    ASCII (what base64 is); None for any other body, which the caller parses.

    The body of a camera JPEG sent as JSON binData is one such member: orjson would reserve a parse
    buffer of 12 times the body (a mapping of its own, 9.5 MB for parrot.jpg) and validate every byte
    in Python's lock, 1.3 ms per request, and its values would be counted first (check_json_body),
    where finding the quotes, checking for control characters and decoding take 0.1 ms. The result is
    what orjson.loads returns for the same body (tests/test_units.py).
    """
    if len(body) < ONE_STRING_MIN_BYTES:
        return None
    try:
        start, end = _skip_space(body, 0, 1), _skip_space(body, len(body) - 1, -1)
        if body[start] != ord("{") or body[end] != ord("}"):
            return None
        start, end = _skip_space(body, start + 1, 1), _skip_space(body, end - 1, -1)
        key_end = body.find(b'"', start + 1, end)
        colon = _skip_space(body, key_end + 1, 1)
        value = _skip_space(body, colon + 1, 1)
    except IndexError:  # nothing but space
        return None
    if (body[start], body[end], body[colon], body[value]) != tuple(b'"":"') or not start < key_end < value < end:
        return None
    key, text = (start + 1, key_end), (value + 1, end)  # without their quotes
    if body.find(b'"', *text) >= 0 or any(
        body.find(b"\\", *part) >= 0 or _has_control(body, *part) for part in (key, text)
    ):
        return None
    view = memoryview(body)
    try:
        return {str(view[slice(*key)], "ascii"): str(view[slice(*text)], "ascii")}
    except UnicodeDecodeError:  # not ASCII: the parser decodes it
        return None


def _skip_space(body: bytes, at: int, step: int) -> int:
    """The first index from `at` (going by `step`) that is not JSON whitespace."""
    while body[at] in _JSON_SPACE:
        at += step
    return at


def _has_control(body: bytes, start: int, end: int) -> bool:
    """body[start:end] holds a control character (which a JSON string may not hold raw)."""
    codes = np.frombuffer(body, np.uint8, end - start, start)
    return bool(codes.size) and bool(codes.min() < 0x20)


def rest_blueprint(*routes: Blueprint) -> Blueprint:
    """The component's `model_error_handler`: the one blueprint the wrapper registers on its REST app.

    Registering it switches the app to orjson, applies the REST limits and CORS (see "REST serving"
    below) and adds `routes` (e.g. the Open Inference Protocol's /v2 endpoints) beside Seldon's own.
    """
    hook = Blueprint("edgeservers", __name__)
    hook.record_once(_use_orjson)
    hook.record_once(_limit_rest_app)
    hook.app_errorhandler(HTTPException)(_http_error)
    for child in routes:
        hook.register_blueprint(child)
    return hook


def _http_error(e: HTTPException) -> Response:
    """A routing miss with its own status: the wrapper's handler of every Exception answered 404 and 405 as 500."""
    code = e.code or 500
    methods = getattr(e, "valid_methods", None)  # MethodNotAllowed's
    allowed = f"; allowed here: {', '.join(methods)}" if methods else ""
    info = (
        f"{request.method} {request.path}: {e.name}{allowed}; the endpoints are POST /api/v1.0/predictions, "
        "GET /api/v1.0/metadata, GET /health/ping, GET /health/status and /v2/... (README)"
    )
    return Response(error_body(code, e.name.upper().replace(" ", "_"), info), code, mimetype="application/json")


def _use_orjson(state: Any) -> None:
    app: Flask = state.app
    app.json = OrjsonProvider(app)


# --- gRPC: extra services on the wrapper's server ------------------------------------------------


def add_grpc_services(registrar: GrpcRegistrar) -> None:
    """Have `registrar(server)` add services to the gRPC server of every gRPC worker the wrapper starts."""
    _grpc_registrars.append(registrar)


_seldon_get_grpc_server = wrapper.get_grpc_server


@functools.wraps(_seldon_get_grpc_server)
def _get_grpc_server(user_model: Any, seldon_metrics: SeldonMetrics, *args: Any, **kwargs: Any) -> grpc.Server:
    _keep_metrics(seldon_metrics)
    server = _seldon_get_grpc_server(user_model, seldon_metrics, *args, **kwargs)
    for registrar in _grpc_registrars:
        registrar(server)
    return server


# --- gRPC: message limit, reflection, bind address ---------------------------------------------
#
# The wrapper sets gRPC's message limits only from the `seldon.io/grpc-max-message-size` annotation
# (otherwise grpc's default: 4 MiB received), enables server reflection unconditionally and binds
# 0.0.0.0. Here the limit comes from max_request_bytes (an explicit annotation still wins), so grpc
# itself answers RESOURCE_EXHAUSTED before reading an oversize message; reflection is served only
# with grpc_reflection=true; the workers bind bind_address.


def _grpc_settings(user_model: Any) -> tuple[int | None, bool]:
    """(max message bytes, reflection on) from the component's settings; (None, True) = the wrapper's own."""
    settings = getattr(user_model, "settings", None)
    if settings is None:
        return None, True
    return settings.max_request_bytes, settings.grpc_reflection


class _NoReflection(types.SimpleNamespace):
    """Stands in for grpc_reflection's module inside the wrapper while it builds a server without reflection."""

    @staticmethod
    def enable_server_reflection(service_names: Any, server: Any, pool: Any = None) -> None:
        return None


def _get_grpc_server_limited(
    user_model: Any, seldon_metrics: Any, annotations: dict | None = None, **kwargs: Any
) -> grpc.Server:
    max_bytes, reflection_on = _grpc_settings(user_model)
    annotations = dict(annotations or {})
    if max_bytes is not None:
        annotations.setdefault(ANNOTATION_GRPC_MAX_MSG_SIZE, str(max_bytes))
    if reflection_on:
        return _get_grpc_server(user_model, seldon_metrics, annotations=annotations, **kwargs)
    # get_grpc_server runs once per gRPC worker, in its main thread, before it serves: nothing else
    # looks at wrapper.reflection meanwhile.
    real = wrapper.reflection
    wrapper.reflection = _NoReflection(SERVICE_NAME=real.SERVICE_NAME)
    try:
        return _get_grpc_server(user_model, seldon_metrics, annotations=annotations, **kwargs)
    finally:
        wrapper.reflection = real


def _grpc_host(user_model: Any) -> str:
    settings = getattr(user_model, "settings", None)
    return _host(settings.bind_address if settings is not None else "0.0.0.0")


def _grpc_status_codes() -> None:
    """Seldon's gRPC Predict lets every exception become UNKNOWN with "Exception calling application: "
    in front of the message; a bad request (400) gets INVALID_ARGUMENT here, a request over a limit (413)
    RESOURCE_EXHAUSTED, as grpc itself answers an oversize message, with the message alone."""
    predict = wrapper.SeldonModelGRPC.Predict

    @functools.wraps(predict)
    def predict_with_status(self: Any, request_grpc: Any, context: grpc.ServicerContext) -> Any:
        try:
            return predict(self, request_grpc, context)
        except SeldonMicroserviceException as e:
            code = GRPC_CODES.get(e.status_code)
            if code is None:
                raise
            context.abort(code, e.message)

    wrapper.SeldonModelGRPC.Predict = predict_with_status


# --- metrics ---------------------------------------------------------------------------------

_seldon_get_rest_microservice = wrapper.get_rest_microservice
_process_metrics: SeldonMetrics | None = None


def _keep_metrics(seldon_metrics: SeldonMetrics) -> None:
    global _process_metrics
    _process_metrics = seldon_metrics


@functools.wraps(_seldon_get_rest_microservice)
def _get_rest_microservice(user_model: Any, seldon_metrics: SeldonMetrics) -> Flask:
    _keep_metrics(seldon_metrics)
    return _seldon_get_rest_microservice(user_model, seldon_metrics)


def hand_over_metrics(metrics: list[dict], method: str = "predict") -> None:
    """Give request metrics to the wrapper's SeldonMetrics of this process, as it does with a v1
    response's meta.metrics: for routes and services the wrapper does not run itself (e.g. the Open
    Inference Protocol's). The wrapper hands its SeldonMetrics to get_rest_microservice and
    get_grpc_server, which install() wraps to keep it; before that (or outside the wrapper) a no-op."""
    if metrics and _process_metrics is not None:
        _process_metrics.update(metrics, method)


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

    SeldonMetrics.update = update_unless_empty


def _bucket_timers_by_bisection() -> None:
    """Put a TIMER value in its histogram bucket by bisection instead of numpy.histogram.

    Seldon's update calls `_update_hist` once per TIMER value: numpy.histogram of a one-element list
    over its 52 bucket edges, then a new array of the counts; about 0.1 ms each, three per request
    (0.3 ms of each request's time under Python's lock, handed over in batches). The same buckets
    (numpy's: [edge, next edge), the last one closed) come from one bisection.
    """

    def update_hist(x: float, vals: list, sumv: float) -> tuple[list, float]:
        edges = seldon_metrics_module.BINS
        bucket = min(bisect.bisect_right(edges, x), len(edges) - 1) - 1  # x == the last edge: the last bucket
        vals = list(vals)
        if bucket >= 0:  # below the first edge: in no bucket, as numpy counts it
            vals[bucket] += 1
        return vals, sumv + x

    _replace(SeldonMetrics, "_update_hist", staticmethod(update_hist))


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


def _host(address: str) -> str:
    """An address as a host in "host:port" (an IPv6 address in brackets)."""
    return f"[{address}]" if ":" in address and not address.startswith("[") else address


def _bind(bind: str, address: str) -> str:
    """A gunicorn bind "host:port" with the host replaced by `address`."""
    return f"{_host(address)}:{bind.rsplit(':', 1)[1]}"


class EdgeUserModelApplication(gunicorn_utils.UserModelApplication):
    """The wrapper's REST application, on EdgeWorker, with the component's RestOptions and bind address."""

    rest_options: RestOptions  # read by the worker (http_worker.EdgeWorker) through its app
    in_main_process: ClassVar[bool] = False  # set by start_servers for one worker that never restarts

    def load_config(self) -> None:
        self.rest_options = options = getattr(self.user_object, "rest_options", None) or _rest_options
        super().load_config()
        cfg = self.cfg
        cfg.set("worker_class", WORKER_CLASS)
        cfg.set("timeout", WORKER_TIMEOUT)
        cfg.set("graceful_timeout", math.ceil(options.graceful_timeout))
        cfg.set("bind", [_bind(b, options.bind_address) for b in cfg.bind])

    def run(self) -> None:
        """gunicorn's arbiter and its workers; or, when start_servers runs REST in the main process (one
        worker that never restarts), the one worker right here: no arbiter, no fork."""
        if not self.in_main_process:
            super().run()
            return
        log = self.cfg.logger_class(self.cfg)
        worker = _MainProcessWorker(
            0, os.getppid(), gunicorn_sock.create_sockets(self.cfg, log), self, WORKER_TIMEOUT, self.cfg, log
        )
        worker.pid = os.getpid()
        worker.init_process()  # loads the model (the wrapper's load()), serves until SIGTERM, then stops gracefully


class _MainProcessWorker(EdgeWorker):
    """The REST worker when it is the main process: its SIGTERM is the whole server's stop."""

    def handle_exit(self, sig: int, frame: Any) -> None:
        _note_stop()
        super().handle_exit(sig, frame)


_seldon_make_rest_server_prod = microservice._make_rest_server_prod


@functools.wraps(_seldon_make_rest_server_prod)
def _make_rest_server_prod(
    user_object: Any, seldon_metrics: SeldonMetrics, args: Any, **kwargs: Any
) -> Callable[[], None]:
    """The wrapper's REST server, marked for start_servers: one worker that never restarts (GUNICORN_WORKERS=1,
    GUNICORN_MAX_REQUESTS=0, the chart's defaults) needs no arbiter and can run in the main process."""
    server = _seldon_make_rest_server_prod(user_object, seldon_metrics, args, **kwargs)
    server.one_worker = args.workers == 1 and not args.max_requests
    if not server.one_worker and hasattr(user_object, "release_inspected"):
        user_object.release_inspected()  # neither this process nor the arbiter loads; each worker reads its own
    return server


class LimitedRequest(Request):
    """Flask's Request with multipart parsed in memory and bounded: the body is already size-limited by the
    worker, so nothing is spooled to /tmp (64Mi emptyDir in the chart)."""

    max_form_parts = MAX_FORM_PARTS
    one_string: dict[str, str] | None = None  # the JSON body, when check_json_body found it one string member

    def get_json(self, force: bool = False, silent: bool = False, cache: bool = True) -> Any:
        if self.one_string is not None:
            return self.one_string
        return super().get_json(force=force, silent=silent, cache=cache)

    def _get_file_stream(
        self, total_content_length: Any, content_type: Any, filename: Any = None, content_length: Any = None
    ) -> IO[bytes]:
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
    if isinstance(text, bytes):  # numpy compares 16-32 bytes at a time: 0.08 ms for 0.8 MB, bytes.count 0.3 ms
        return int(np.count_nonzero(np.frombuffer(text, np.uint8) == ord(","))) + 1
    return text.count(",") + 1


V1_BINARY_HINT = "send the tensor as tftensor or the image as binData"


def _check_values(count: int, where: str, hint: str = V1_BINARY_HINT) -> None:
    limit = _rest_options.max_json_values
    if limit is not None and count > limit:
        raise RequestRejected(
            413,
            (
                f"{where} holds about {count} JSON values (counted by commas), more than {limit}: twice the model's "
                f"input size plus {JSON_VALUES_SLACK} (set by the model, no parameter); {hint}"
            ),
            "TOO_MANY_VALUES",
        )


def check_json_values(text: bytes, where: str, hint: str = V1_BINARY_HINT) -> None:
    """Refuse JSON `text` holding more values than the model's inputs could use, before it is parsed
    (RequestRejected, 413); `where` names it in the message, `hint` says what to send instead."""
    _check_values(_count_values(text), where, hint)


def check_json_body() -> None:
    """Refuse a JSON body with too many values before it is parsed (raises RequestRejected, which the
    wrapper's app answers 413); a body that is one string member (a camera JPEG's binData) holds one
    value, and is kept split for get_json (LimitedRequest)."""
    body = request.get_data(cache=True)
    single = one_string_member(body)
    if single is None:
        check_json_values(body, "the JSON body")
    elif request.is_json and isinstance(request, LimitedRequest):  # get_json() parses only JSON content types
        request.one_string = single


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
        raise RequestRejected(
            413,
            (
                f"the form is larger than allowed: at most {MAX_FORM_PARTS} parts (fixed: one per SeldonMessage "
                f"field) and {_rest_options.max_request_bytes} bytes (the parameter max_request_bytes)"
            ),
            "REQUEST_TOO_LARGE",
        ) from None
    except HTTPException as e:
        raise RequestRejected(
            e.code or 400, f"the request could not be read: {e.description}", "MICROSERVICE_BAD_DATA"
        ) from None
    except (ValueError, RecursionError, UnicodeDecodeError, TypeError) as e:
        what = type(e).__name__ if isinstance(e, RecursionError) else str(e)[:200]
        raise RequestRejected(
            400,
            f"a form field or parameter is not valid JSON ({what}): send binData as a file part, other fields as JSON",
            "MICROSERVICE_BAD_DATA",
        ) from None


JSON_VALUES_SLACK = 4096


def json_values_limit(input_elements: int | None) -> int | None:
    """The JSON values a request may hold: twice the model's input elements plus some slack (None: no bound)."""
    return None if input_elements is None else 2 * input_elements + JSON_VALUES_SLACK


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
    flask_utils.base64 = pybase64  # file parts (binData) encoded 40x faster (SIMD)
    microservice.UserModelApplication = EdgeUserModelApplication
    _replace(microservice, "_make_rest_server_prod", _make_rest_server_prod)
    wrapper.get_request = _get_request


# --- supervision: crash-only processes, readiness that tells the truth ------------------------
#
# The wrapper's start_servers runs gunicorn's arbiter (REST) in the main process and the gRPC parent
# (which only join()s its workers), the metrics server and a custom server as children; nothing
# watches them, and gunicorn's SIGCHLD handler reaps every child of the main process, so a dead one
# is never even noticed. Here the main process supervises: each gRPC worker (and a custom server) is
# its child, and so is REST's gunicorn arbiter when REST has several workers or restarts them
# (GUNICORN_WORKERS > 1, GUNICORN_MAX_REQUESTS); one REST worker that never restarts (the chart's
# defaults) needs no arbiter and is served by the main process itself, the supervisor then watching
# from a thread (section "memory"). When a part ends unexpectedly the supervisor writes one line
# naming it and how it ended, marks the server down (readiness fails), stops the others and exits 1,
# so that the kubelet restarts the container; REST in the main process dies with it. Inside the
# REST part, what heals stays as it was: gunicorn restarts a dead worker, unless the new worker cannot
# boot (then the REST part ends, and with it the server). SIGTERM or SIGINT to the main process stops
# every part (REST gracefully) and exits 0. Any process of the server that is told to stop (SIGTERM or
# SIGINT to the main process, the REST worker in it, or a gRPC worker) notes it before stopping, so a
# part that ends after a stop was asked is seen as stopping, not as a crash: the process group's
# SIGTERM, which reaches every part at once, exits 0 however the parts' exits interleave.

STOP_TIMEOUT = 30.0  # seconds the parts get to stop (gunicorn's graceful timeout) before SIGKILL
_FORK = multiprocessing.get_context(
    "fork"
)  # the parts are closures over the wrapper's objects: forked, as the wrapper does
_state = mmap.mmap(-1, 512)  # shared with every process forked from here: "<part> (pid N) ..." while down
_stopping = mmap.mmap(-1, 1)  # shared too: 1 once any process of the server was told to stop
_metrics: list[SeldonMetrics] = []  # the wrapper's SeldonMetrics, whose Manager is watched
_grpc_endpoint: list[tuple[str, int]] = []  # where the gRPC workers listen, for the readiness check


def _mark_down(text: str) -> None:
    data = text.encode()[: len(_state) - 1]
    _state.seek(0)
    _state.write(data + b"\0" * (len(_state) - len(data)))


def _note_stop() -> None:
    _stopping[0] = 1


def _stop_noted() -> bool:
    return _stopping[0] == 1


def _marked_down() -> str:
    return _state[:].split(b"\0", 1)[0].decode(errors="replace")


def unavailable() -> list[str]:
    """The parts of this server that are down, as seen from a worker: what the supervisor marked, the
    metrics Manager unreachable, the gRPC port not accepting. Empty when every part is up."""
    down = [_marked_down()] if _marked_down() else []
    for metrics in _metrics:
        if isinstance(getattr(metrics, "_manager", None), MetricsManager):
            continue  # on threads of the supervisor (section "memory"): up as long as the server is
        try:
            len(metrics.data)  # one round trip to the Manager
        except Exception as e:  # ConnectionRefusedError, EOFError, BrokenPipeError, ...
            down.append(f"the metrics Manager is unreachable ({type(e).__name__})")
    for host, port in _grpc_endpoint:
        try:
            socket.create_connection(
                ("127.0.0.1" if host in ("0.0.0.0", "", "[::]") else host.strip("[]"), port), 1.0
            ).close()
        except OSError as e:
            down.append(f"gRPC is not accepting connections on port {port} ({e.strerror or type(e).__name__})")
    return down


def _remember_metrics(init: Callable[..., None]) -> Callable[..., None]:
    @functools.wraps(init)
    def init_and_remember(self: SeldonMetrics, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        _metrics.append(self)

    return init_and_remember


class _GrpcWorkers:
    """What _make_grpc_server returns here: the gRPC workers to start, as children of the supervisor."""

    def __init__(self, user_object: Any, seldon_metrics: Any, args: Any, annotations: dict):
        self.user_object, self.seldon_metrics, self.args, self.annotations = (
            user_object,
            seldon_metrics,
            args,
            annotations,
        )
        self.count = args.grpc_workers

    @contextlib.contextmanager
    def reserved(self) -> Iterator[str]:
        """The address every worker binds (SO_REUSEPORT), the port held for the server's lifetime.
        A port that another process holds stops the server at start with one line, not a traceback."""
        with contextlib.ExitStack() as held:
            try:
                port = held.enter_context(microservice._reserve_grpc_port(self.args.grpc_port))
            except OSError as e:
                raise SystemExit(
                    f"{type(self.user_object).__name__}: cannot listen for gRPC on port {self.args.grpc_port}: "
                    f"{e.strerror} (set by --grpc-port; the operator passes PREDICTIVE_UNIT_GRPC_SERVICE_PORT)"
                ) from None
            host = _grpc_host(self.user_object)
            _grpc_endpoint.append((host, port))
            yield f"{host}:{port}"

    def target(self, bind_address: str) -> Callable[[], None]:
        return functools.partial(
            _grpc_worker, self.user_object, self.seldon_metrics, self.args, self.annotations, bind_address
        )

    def __call__(self) -> None:  # the wrapper's behaviour, should anything call it as a plain target
        with self.reserved() as bind_address:
            workers = [_FORK.Process(target=self.target(bind_address)) for _ in range(self.count)]
            for worker in workers:
                worker.start()
            for worker in workers:
                worker.join()


def _grpc_worker(*args: Any) -> None:
    signal.signal(signal.SIGTERM, _stop_grpc_worker)
    with contextlib.suppress(KeyboardInterrupt):
        microservice._run_grpc_server(*args)


def _stop_grpc_worker(signum: int, frame: Any) -> None:
    """SIGTERM in a gRPC worker: noted as a stop, then KeyboardInterrupt, on which the wrapper stops its server."""
    _note_stop()
    raise KeyboardInterrupt


def _make_grpc_server(user_object: Any, seldon_metrics: Any, args: Any, annotations: dict) -> _GrpcWorkers:
    return _GrpcWorkers(user_object, seldon_metrics, args, annotations)


def _how_it_ended(name: str, code: int | None) -> str:
    if code is None:
        return "ended (exit status unknown)"
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    gunicorn = {3: " (gunicorn: a worker failed to boot)", 4: " (gunicorn: the app failed to load)"}
    return f"exited with code {code}" + (gunicorn.get(code, "") if name in ("REST server", "metrics server") else "")


def _children(pid: int) -> list[int]:
    """The processes forked by any thread of `pid` (or given to it as orphans), zombies included."""
    children: list[int] = []
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError), open(f"/proc/{pid}/task/{task}/children") as f:
                children.extend(int(c) for c in f.read().split())
    return children


def _descendants(pid: int) -> list[int]:
    found: list[int] = []
    todo = [pid]
    while todo and len(found) < 10_000:
        children = _children(todo.pop())
        found.extend(children)
        todo.extend(children)
    return found


PR_SET_CHILD_SUBREAPER = 36  # <linux/prctl.h>


def _adopt_orphans() -> None:
    """Make this process the one that orphans below it are given to (instead of init), so that stopping
    finds every one: the workers of a REST arbiter killed a moment after forking them, seen by no earlier
    look, once lived on and held the container's stderr open. Linux 3.4+; elsewhere nothing changes."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def _pidfd(pid: int | None) -> int | None:
    """A descriptor that becomes readable when the process ends (Linux 5.3+), else None (then polled).

    A Process's own sentinel is no use here: the parts' children (gunicorn workers) inherit it, so it
    stays silent while an orphaned worker lives on."""
    try:
        return os.pidfd_open(pid) if pid else None
    except (AttributeError, OSError):
        return None


class _Supervisor:
    POLL = 0.5  # seconds between checks when no pidfd wakes the supervisor earlier

    def __init__(self) -> None:
        self.parts: list[tuple[str, multiprocessing.process.BaseProcess]] = []
        self.stop_signal: int | None = None
        _adopt_orphans()

    def start(self, name: str, target: Callable[[], None]) -> None:
        process = _FORK.Process(target=target, name=name, daemon=False)
        process.start()
        self.parts.append((name, process))

    def _on_signal(self, signum: int, frame: Any) -> None:
        _note_stop()
        self.stop_signal = self.stop_signal or signum

    def watch(self) -> str | None:
        """Wait until a part ends unasked (then the line naming it and how it ended, the server marked down)
        or a stop is asked (None), including a part that ends once any process of the server was told to stop."""
        watched = list(self.parts) + [
            ("Seldon's metrics Manager", m._manager._process) for m in _metrics if getattr(m._manager, "_process", None)
        ]  # a MetricsManager (section "memory") has no process: it runs on threads of this one
        fds = [fd for fd in (_pidfd(p.pid) for _, p in watched) if fd is not None]
        try:
            while self.stop_signal is None:
                multiprocessing.connection.wait(fds, timeout=self.POLL)
                if self.stop_signal is not None:
                    break
                for name, process in watched:
                    if process.exitcode is not None:  # this process is the parent of every part: waitpid works
                        if _stop_noted():
                            return None
                        line = f"{name} (pid {process.pid}) {_how_it_ended(name, process.exitcode)}"
                        _mark_down(line)
                        print(
                            f"edgeservers: {line}: stopping the whole server (exit 1) so that it is restarted",
                            file=sys.stderr,
                            flush=True,
                        )
                        return line
            return None
        finally:
            for fd in fds:
                os.close(fd)

    def run(self) -> int:
        """Watch every part (REST among them) until one ends (exit 1) or a stop signal arrives (exit 0)."""
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._on_signal)
        if self.watch():
            self.stop_all(signal.SIGTERM)
            return 1
        self.stop_all(self.stop_signal or signal.SIGTERM)
        return 0

    def run_with_rest(self, rest: Callable[[], None]) -> int:
        """Serve REST in this process, whose worker owns SIGTERM and SIGINT, and watch the parts from a
        thread: a part that ends stops REST as SIGTERM does (gracefully); the server exits 1 when the part
        ended unasked, 0 when a stop had been asked."""
        ended: list[str] = []

        def watch() -> None:
            line = self.watch()
            if line:
                ended.append(line)
            if line or not self.stop_signal:  # a part ended (crashed, or told to stop alone): REST stops too
                os.kill(os.getpid(), signal.SIGTERM)

        watcher = threading.Thread(target=watch, name="supervisor", daemon=True)
        watcher.start()
        try:
            rest()
        finally:
            self.stop_signal = self.stop_signal or signal.SIGTERM
            watcher.join()
            self.stop_all(signal.SIGTERM)
        return 1 if ended else 0

    def stop_all(self, signum: int) -> None:
        """Ask every live part, and the orphans of a dead one (adopted by this process), to stop (REST and
        metrics finish their requests, as gunicorn does on SIGTERM); SIGKILL whatever is left below this
        process after STOP_TIMEOUT."""
        ours = os.getpgid(0)
        parts = {process.pid for _, process in self.parts if process.pid}
        live = [process.pid for _, process in self.parts if process.pid and process.exitcode is None]
        orphans = [pid for pid in _children(os.getpid()) if pid not in parts]
        for pid in live + orphans:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signum)
        deadline = time.monotonic() + STOP_TIMEOUT
        for _, process in self.parts:
            process.join(timeout=max(0.0, deadline - time.monotonic()))
        while time.monotonic() < deadline and any(_alive_in_group(p, ours) for p in _descendants(os.getpid())):
            time.sleep(0.1)
        for pid in _descendants(os.getpid()):
            if _alive_in_group(pid, ours):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
        for _, process in self.parts:
            process.join(timeout=5.0)


def _alive_in_group(pid: int, group: int) -> bool:
    """Still running (not a zombie) and still in this server's process group (the pid was not reused)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return fields[0] != "Z" and int(fields[2]) == group  # state, ppid, pgrp
    except (OSError, IndexError, ValueError):
        return False


def start_servers(
    target1: Callable, target2: Callable | None, target3: Callable | None, metrics_target: Callable | None
) -> None:
    """The wrapper's start_servers, supervised: every part a child of this process, which watches them."""
    supervisor = _Supervisor()
    with contextlib.ExitStack() as stack:
        if isinstance(target2, _GrpcWorkers):
            bind_address = stack.enter_context(target2.reserved())
            for i in range(target2.count):
                supervisor.start(f"gRPC worker {i + 1} of {target2.count}", target2.target(bind_address))
        elif target2:
            supervisor.start("gRPC server", target2)
        if target3:
            supervisor.start("custom server", target3)
        if metrics_target:
            supervisor.start("metrics server", metrics_target)
        if getattr(target1, "one_worker", False):  # section "memory": REST in this process, no arbiter
            EdgeUserModelApplication.in_main_process = True
            code = supervisor.run_with_rest(target1)
        else:
            supervisor.start("REST server", target1)
            code = supervisor.run()
    sys.exit(code)


# --- memory: metrics store and endpoint on threads of the main process ----------------------------
#
# Seldon keeps custom metrics in a multiprocessing Manager (a forked process of its own) and serves
# them from a second gunicorn server: an arbiter and a worker, two more forked copies of the main
# process. Each such process costs 15-20 MB (PSS) on its own, however little it does: its writes copy
# the pages it shares with the main process. Here the Manager's server runs on threads of the main
# process (the supervisor, which otherwise only waits on its parts), and the Prometheus endpoint is the
# wrapper's own metrics app (`wrapper.get_metrics_microservice`: same port, path and text; the REST
# bind address, no CORS, bounded as the metrics worker was) on a werkzeug thread beside it, reading the
# Manager's dict directly: three processes fewer. Workers still reach the store through the Manager's
# proxies and socket, as before; the threads are blocked in accept/select when the supervisor forks,
# and a forked part never touches their objects. They end with the main process, after the parts have
# stopped (so requests in flight still hand their metrics over).
#
# REST the same way: with one worker that never restarts (the chart's GUNICORN_WORKERS=1 and no
# GUNICORN_MAX_REQUESTS), gunicorn's arbiter only forks that worker and waits; both copy pages of the
# main process as they write them (Python's reference counts write to every object they touch): about
# 25 MB of the tree. Then start_servers has EdgeUserModelApplication run the worker in the main process
# (after the gRPC workers are forked, before the model is loaded, as the arbiter's worker did) and the
# supervisor watches the parts from a thread. What the arbiter did for one worker is not lost: its
# signals are the worker's own; a dead worker was restarted, now the process ends and the kubelet
# restarts it (crash-only, as for every other part).


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
    _set_cors(app, ())
    app.config["MAX_CONTENT_LENGTH"] = METRICS_OPTIONS.max_request_bytes
    handler = type("MetricsRequestHandler", (_MetricsRequestHandler,), {"access_log": access_log})
    server = _BoundedServer(host, port, app, handler=handler)
    thread = threading.Thread(target=server.serve_forever, name="metrics-http", daemon=True)
    thread.start()
    return thread


def _metrics_manager() -> MetricsManager:
    """What SeldonMetrics gets for `Manager()`: on Linux listening on an abstract unix socket (no file, so no
    limit from a long TMPDIR: a socket path is at most 107 bytes, and multiprocessing puts it in TMPDIR);
    clients still authenticate with the Manager's key."""
    address = f"\0edgeservers-metrics-{os.getpid()}-{secrets.token_hex(8)}" if sys.platform == "linux" else None
    manager = MetricsManager(address=address)
    manager.start_in_process()
    return manager


_seldon_make_rest_metrics_server = microservice._make_rest_metrics_server


@functools.wraps(_seldon_make_rest_metrics_server)
def _make_rest_metrics_server(seldon_metrics: SeldonMetrics, args: Any) -> Callable[[], None] | None:
    """Serve the metrics from a thread of the main process and have the wrapper start no metrics process
    (None); the wrapper's own server in debug mode (Flask's development server)."""
    if args.debug:
        return _seldon_make_rest_metrics_server(seldon_metrics, args)
    labels = dict(seldon_metrics._extra_default_labels)
    _serve_metrics(_rest_options.bind_address.strip("[]"), args.metrics_port, bool(args.access_log), labels)
    return None


# --- memory: large buffers go back to the system ---------------------------------------------------

MMAP_THRESHOLD = 4 << 20  # larger buffers get mappings of their own, returned to the system at free()
TRIM_THRESHOLD = 4 << 20  # free memory an arena keeps at its top instead of giving it back
ARENA_MAX = 2  # malloc arenas shared by the request threads
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8


def tuned_malloc() -> bool:
    """Fixed limits for glibc's malloc, so freed request buffers neither stay nor churn (True when set).

    By default glibc serves allocations above its mmap threshold (128 KiB at first) with mappings of
    their own, but each free() of one raises the threshold to its size (up to 32 MiB), and with it the
    trim threshold to twice that: after the first requests, bodies, base64 text, decoded images and
    tensors come from the arenas' heaps and stay resident once freed (45 MB more in a worker with
    GUNICORN_THREADS=8). Fixed thresholds (as MALLOC_MMAP_THRESHOLD_ and MALLOC_TRIM_THRESHOLD_ would
    set them) stop that growth. Both at 4 MiB: a camera request's buffers (under 1 MiB each for a
    VGA-to-1080p JPEG) come from the heap, and an arena keeps up to 4 MiB free at its top for the next
    request instead of giving the pages back and faulting them in again (with glibc's 128 KiB trim
    threshold about 530 page faults and 4 ms of CPU more per parrot.jpg request, bench.memory's
    figures unchanged). And each request thread would get an arena of its own (up to 8 per core), each
    keeping its freed small chunks: two arenas (as MALLOC_ARENA_MAX=2) take 3-4 MB less with
    GUNICORN_THREADS=8 (bench.memory); Python objects come from its own allocator under the GIL, so the
    threads hardly contend for malloc's locks. Set in the main process before any request thread
    starts or any worker is forked.
    """
    try:
        mallopt = ctypes.CDLL(None).mallopt
        return all(
            mallopt(option, value)
            for option, value in (
                (_M_MMAP_THRESHOLD, MMAP_THRESHOLD),
                (_M_TRIM_THRESHOLD, TRIM_THRESHOLD),
                (_M_ARENA_MAX, ARENA_MAX),
            )
        )
    except (OSError, AttributeError):  # not glibc (musl has no mallopt of this kind)
        return False


def _serve_metrics_in_main_process() -> None:
    seldon_metrics_module.Manager = _metrics_manager
    _replace(microservice, "_make_rest_metrics_server", _make_rest_metrics_server)


# --- installation ------------------------------------------------------------------------------

_installed = False


def _replace(owner: Any, name: str, replacement: Callable[..., Any] | staticmethod) -> None:
    """Put `replacement` in the wrapper's place of `name`, keeping the wrapper's own function reachable as
    `__wrapped__` (tests/test_seldon_compat.py hashes that one)."""
    function = getattr(replacement, "__func__", replacement)  # a staticmethod's function: what getattr finds
    function.__wrapped__ = getattr(owner, name)  # type: ignore[union-attr]
    setattr(owner, name, replacement)


def install() -> None:
    """Apply every workaround once, in the wrapper's main process (idempotent: tests build several components)."""
    global _installed
    if _installed:
        return
    _installed = True
    _skip_empty_metric_updates()
    _bucket_timers_by_bisection()
    _grpc_status_codes()
    _replace(wrapper, "get_grpc_server", _get_grpc_server_limited)
    SeldonMetrics.__init__ = _remember_metrics(SeldonMetrics.__init__)
    _replace(microservice, "_make_grpc_server", _make_grpc_server)
    _replace(microservice, "start_servers", start_servers)
    _replace(wrapper, "get_rest_microservice", _get_rest_microservice)
    _install_rest_serving()
    _serve_metrics_in_main_process()  # the metrics Manager and endpoint on threads of this process
    tuned_malloc()


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
