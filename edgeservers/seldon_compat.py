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
from typing import Any, Callable

import grpc
import orjson
import seldon_core
from flask import Blueprint, Flask, Response
from flask.json.provider import DefaultJSONProvider
from seldon_core import wrapper
from seldon_core.metrics import SeldonMetrics

WRAPPER_VERSION = "1.17.1"

# "module:qualname" of wrapper code a workaround depends on -> what it relies on there.
RELIED_ON = {
    "seldon_core.wrapper:get_rest_microservice": "registers user_model.model_error_handler as a blueprint",
    "seldon_core.wrapper:get_grpc_server": "builds the gRPC server; looked up as a module attribute per worker",
    "seldon_core.metrics:SeldonMetrics.update": "called after every request, even with no metrics",
    "seldon_core.seldon_methods:health_status": "returns user_model.health_status_raw() when present",
    "seldon_core.seldon_methods:handle_raw_custom_metrics": "reads meta.metrics of a predict_raw response",
    "seldon_core.microservice:_make_rest_server_prod": "builds the REST app with wrapper.get_rest_microservice(user_object, seldon_metrics), looked up as a module attribute",
    "seldon_core.microservice:_run_grpc_server": "builds the gRPC server with wrapper.get_grpc_server(user_object, seldon_metrics, ...)",
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
def _get_grpc_server(user_model: Any, seldon_metrics: SeldonMetrics, *args: Any, **kwargs: Any) -> grpc.Server:
    _keep_metrics(seldon_metrics)
    server = _seldon_get_grpc_server(user_model, seldon_metrics, *args, **kwargs)
    for registrar in _grpc_registrars:
        registrar(server)
    return server


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

    SeldonMetrics.update = update_unless_empty  # type: ignore[method-assign]


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
    wrapper.get_rest_microservice = _get_rest_microservice


def wrapper_version() -> str:
    return seldon_core.__version__
