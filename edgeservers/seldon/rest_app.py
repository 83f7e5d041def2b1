"""Seldon's REST app and its gunicorn application, bounded: orjson, the request limits, CORS only for the origins
allowed, every decoding failure answered 4xx, our errors in Seldon's v1 body, the extra routes beside
Seldon's own, and the worker (edgeservers/seldon/rest_worker.py) on the chosen address.

As shipped, the wrapper runs gunicorn's sync worker (one thread per connection, 5000 s timeout), binds 0.0.0.0,
lets any Origin through CORS, parses multipart with Werkzeug's defaults (parts past 500 KB spooled to /tmp,
1000 parts) and answers form-decoding failures 500. The one hook it offers a model is the blueprint it
registers as `model_error_handler`: `rest_blueprint` makes everything here happen on that registration.
"""

from __future__ import annotations

import functools
import io
import math
import os
from collections.abc import Callable
from typing import IO, Any

import orjson
import pybase64
from flask import Blueprint, Flask, Request, Response, request
from flask.json.provider import DefaultJSONProvider
from flask_cors import CORS
from gunicorn import sock as gunicorn_sock
from seldon_core import flask_utils, gunicorn_utils, microservice, wrapper
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge
from werkzeug.sansio.multipart import MultipartDecoder

from ..errors import BadRequest, EdgeError, TooLarge
from ..protocols import json_limits
from ..protocols.errors import v1_error
from . import state
from .patches import patch, relies_on
from .rest_worker import EdgeWorker, RestOptions, error_body

WORKER_CLASS = "edgeservers.seldon.rest_worker.EdgeWorker"
WORKER_TIMEOUT = 30  # s without a heartbeat before the arbiter restarts a worker; the event loop beats every 0.2 s
MAX_FORM_PARTS = 16  # Seldon's multipart form has one part per SeldonMessage field
_ORJSON_OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS

relies_on(
    "seldon_core.gunicorn_utils:UserModelApplication.load",
    "1cca8c411f3b0ff2",
    "calls user_object.load() in each worker and returns the Flask app",
)
relies_on(
    "werkzeug.wrappers.request:Request.make_form_data_parser",
    "c0c9d74d8f10b1c4",
    "passes _get_file_stream, max_form_memory_size and max_form_parts to the parser",
)
relies_on(
    "werkzeug.sansio.multipart:MultipartDecoder.next_event",
    "5536f59ee7fca495",
    "in DATA without a full boundary, keeps the buffer from last_newline() on",
)


class OrjsonProvider(DefaultJSONProvider):
    """Flask's JSON provider with orjson underneath: Seldon's app parses every request body and writes every
    response through it; orjson parses about 3x faster and writes numpy arrays directly (docs/architecture.md)."""

    def dumps(self, obj: Any, **kwargs: Any) -> str:
        return orjson.dumps(obj, default=self.default, option=_ORJSON_OPTIONS).decode()

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        return orjson.loads(s)  # orjson.JSONDecodeError is a ValueError: Flask answers 400 as before

    def response(self, *args: Any, **kwargs: Any) -> Response:
        body = orjson.dumps(self._prepare_response_obj(args, kwargs), default=self.default, option=_ORJSON_OPTIONS)
        return self._app.response_class(body, mimetype=self.mimetype)


def rest_blueprint(*routes: Blueprint) -> Blueprint:
    """The component's `model_error_handler`: the one blueprint the wrapper registers on its REST app.

    Registering it switches the app to orjson, applies the REST limits and CORS, answers our errors and
    routing misses with their own status, and adds `routes` (the Open Inference Protocol's) beside Seldon's.
    """
    hook = Blueprint("edgeservers", __name__)
    hook.record_once(_use_orjson)
    hook.record_once(_limit_rest_app)
    hook.app_errorhandler(HTTPException)(_http_error)
    hook.app_errorhandler(EdgeError)(_edge_error)
    for child in routes:
        hook.register_blueprint(child)
    return hook


def _edge_error(e: EdgeError) -> Response:
    return Response(orjson.dumps(v1_error(e)), e.status, mimetype="application/json")


def _http_error(e: HTTPException) -> Response:
    """A routing miss with its own status: the wrapper's handler of every Exception answered 404 and 405 as 500."""
    code = e.code or 500
    methods = getattr(e, "valid_methods", None)  # MethodNotAllowed's
    allowed = f"; allowed here: {', '.join(methods)}" if methods else ""
    info = (
        f"{request.method} {request.path}: {e.name}{allowed}; the endpoints are POST /api/v1.0/predictions, "
        "GET /api/v1.0/metadata, GET /health/ping, GET /health/status and /v2/... (docs/protocols.md)"
    )
    return Response(error_body(code, e.name.upper().replace(" ", "_"), info), code, mimetype="application/json")


def _use_orjson(setup: Any) -> None:
    app: Flask = setup.app
    app.json = OrjsonProvider(app)


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


def _limit_rest_app(setup: Any) -> None:
    app: Flask = setup.app
    options = state.current().rest_options
    app.request_class = LimitedRequest
    app.config["MAX_CONTENT_LENGTH"] = options.max_request_bytes
    LimitedRequest.max_form_memory_size = options.max_request_bytes
    set_cors(app, options.cors_origins)


def set_cors(app: Flask, origins: tuple[str, ...]) -> None:
    """Undo the wrapper's CORS(app) (every origin, every method); with `origins`, allow just those."""
    funcs = app.after_request_funcs.get(None, [])
    funcs[:] = [f for f in funcs if getattr(f, "__name__", "") != "cors_after_request"]
    for name in ("handle_exception", "handle_user_exception"):  # flask-cors wraps these on the instance
        app.__dict__.pop(name, None)
    if origins:
        CORS(app, origins=list(origins), methods=["GET", "POST", "OPTIONS"], supports_credentials=False)


def check_json_body() -> None:
    """Refuse a JSON body with too many values before it is parsed (TooLarge); a body that is one string member
    (a camera JPEG's binData) holds one value, and is kept split for get_json (LimitedRequest)."""
    body = request.get_data(cache=True)
    single = json_limits.one_string_member(body)
    if single is None:
        json_limits.check_values(body, state.current().values_limit, "the JSON body")
    elif request.is_json and isinstance(request, LimitedRequest):  # get_json() parses only JSON content types
        request.one_string = single


def _form_values(fields: Any) -> int:
    return sum(json_limits.count_values(v) for v in fields.values())


def _limit_get_request() -> None:
    get_request = flask_utils.get_request

    @functools.wraps(get_request)
    def limited_get_request(skip_decoding: bool = False) -> Any:
        """Seldon's get_request with the values counted before parsing and every decoding failure answered 4xx."""
        content_type = (request.content_type or "").lower()
        limit = state.current().values_limit
        try:
            if "multipart/form-data" in content_type:
                form = request.form  # parses (in memory, bounded by LimitedRequest)
                json_limits.check_count(_form_values(form), limit, "the multipart form fields")
            elif "json" in content_type or not content_type:
                check_json_body()
            else:
                json_limits.check_count(_form_values(request.form), limit, "the form fields")
            return get_request(skip_decoding)
        except RequestEntityTooLarge:
            raise TooLarge(
                f"the form is larger than allowed: at most {MAX_FORM_PARTS} parts (fixed: one per SeldonMessage "
                f"field) and {state.current().rest_options.max_request_bytes} bytes (the parameter max_request_bytes)"
            ) from None
        except HTTPException as e:
            raise BadRequest(f"the request could not be read: {e.description}") from None
        except (ValueError, RecursionError, UnicodeDecodeError, TypeError) as e:
            what = type(e).__name__ if isinstance(e, RecursionError) else str(e)[:200]
            raise BadRequest(
                f"a form field or parameter is not valid JSON ({what}): send binData as a file part, other fields as JSON"
            ) from None

    patch(
        wrapper,
        "get_request",
        limited_get_request,
        target="seldon_core.flask_utils:get_request",
        source_sha="4e2de390f9861b5f",
        why="decodes JSON / form / multipart bodies; looked up as a seldon_core.wrapper global",
    )


def _linear_multipart_data() -> None:
    """Backport of the fix for CVE-2023-46136 (Werkzeug 2.3.8 / 3.0.1) to the 2.2.3 that seldon-core pins.

    In a file part's data, while no complete boundary has arrived, the decoder hands over the data up to the
    last CR or LF (a boundary may start there) and keeps the rest for the next round. A part that begins with
    CR or LF and has none after is kept whole and searched again after every chunk: quadratic
    (docs/security.md). As in the fix: when the last CR/LF is further from the end than a boundary is long
    and no boundary is in the buffer, hand everything over.
    """
    last_newline = MultipartDecoder.last_newline

    @functools.wraps(last_newline)
    def linear_last_newline(self: MultipartDecoder) -> int:
        index = last_newline(self)
        if len(self.buffer) - index > len(b"\r\n--" + self.boundary) and self.buffer.find(b"--" + self.boundary) == -1:
            return len(self.buffer)
        return index

    patch(
        MultipartDecoder,
        "last_newline",
        linear_last_newline,
        source_sha="987dc6c663a3986b",
        why="the index up to which a file part's data is handed over while no boundary has arrived",
    )


# --- the gunicorn application ------------------------------------------------------------------------------


def host_of(address: str) -> str:
    """An address as a host in "host:port" (an IPv6 address in brackets)."""
    return f"[{address}]" if ":" in address and not address.startswith("[") else address


def _bind(bind: str, address: str) -> str:
    """A gunicorn bind "host:port" with the host replaced by `address`."""
    return f"{host_of(address)}:{bind.rsplit(':', 1)[1]}"


class EdgeUserModelApplication(gunicorn_utils.UserModelApplication):
    """The wrapper's REST application, on EdgeWorker, with the server's RestOptions and bind address."""

    rest_options: RestOptions  # read by the worker (rest_worker.EdgeWorker) through its app

    def load_config(self) -> None:
        self.rest_options = options = state.current().rest_options
        super().load_config()
        cfg = self.cfg
        cfg.set("worker_class", WORKER_CLASS)
        cfg.set("timeout", WORKER_TIMEOUT)
        cfg.set("graceful_timeout", math.ceil(options.graceful_timeout))
        cfg.set("bind", [_bind(b, options.bind_address) for b in cfg.bind])

    def run(self) -> None:
        """gunicorn's arbiter and its workers; or, when the supervisor runs REST in the main process (one worker
        that never restarts), the one worker right here: no arbiter, no fork."""
        if not state.current().rest_in_main_process:
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
        state.current().note_stop()
        super().handle_exit(sig, frame)


def _serve_rest() -> None:
    patch(
        microservice,
        "UserModelApplication",
        EdgeUserModelApplication,
        target="seldon_core.microservice:_make_rest_server_prod",
        source_sha="d1abe4bd738bde6b",
        why=(
            "runs the module global UserModelApplication with bind 0.0.0.0 and its gunicorn options; builds the "
            "REST app with wrapper.get_rest_microservice(user_object, seldon_metrics), looked up as a module attribute"
        ),
    )
    make_rest_server_prod = microservice._make_rest_server_prod

    @functools.wraps(make_rest_server_prod)
    def marked(user_object: Any, seldon_metrics: Any, args: Any, **kwargs: Any) -> Callable[[], None]:
        """The wrapper's REST server, marked for the supervisor: one worker that never restarts
        (GUNICORN_WORKERS=1, GUNICORN_MAX_REQUESTS=0, the chart's defaults) needs no arbiter and can run in the
        main process."""
        server = make_rest_server_prod(user_object, seldon_metrics, args, **kwargs)
        server.one_worker = args.workers == 1 and not args.max_requests
        if not server.one_worker and hasattr(user_object, "release_inspected"):
            user_object.release_inspected()  # neither this process nor the arbiter loads; each worker reads its own
        return server

    patch(
        microservice,
        "_make_rest_server_prod",
        marked,
        source_sha="d1abe4bd738bde6b",
        why="returns the closure that runs the REST server (the supervisor's REST target)",
    )


def install() -> None:
    _linear_multipart_data()
    patch(
        flask_utils,
        "base64",
        pybase64,  # file parts (binData) encoded 40x faster (SIMD)
        target="seldon_core.flask_utils:get_multi_form_data_request",
        source_sha="52946e584a1ce0a4",
        why="json.loads every multipart field but strData; base64-encodes file parts with the module global base64",
    )
    _serve_rest()
    _limit_get_request()
