"""The Seldon component both servers are: the model built and checked at start, both protocols attached, and
the calls the wrapper makes (load, predict_raw, health, metadata) handed to the model and the v1 protocol.

`__init__` runs once in the wrapper's main process, before it forks its REST and gRPC servers: a model or a
parameter that cannot be used stops the process there with one line. `load()` runs in each process that serves.
"""

from __future__ import annotations

import os
import sys
from typing import Any, ClassVar, NoReturn

from flask import Blueprint, Response, jsonify, request
from seldon_core import seldon_methods
from seldon_core.user_model import SeldonComponent

from ..core.model import EdgeModel
from ..errors import ModelLoadError, Unavailable
from ..process_tuning import tuned_malloc
from ..protocols import json_limits
from ..protocols.oip import grpc as oip_grpc
from ..protocols.oip import rest as oip_rest
from ..protocols.oip.model import OipModel
from ..protocols.v1.handler import V1Handler
from ..runtimes.base import ModelRuntime
from ..settings import Settings
from . import concurrent_requests, install, metrics, rest_app, supervisor
from .grpc import add_services
from .patches import relies_on
from .rest_worker import RestOptions

relies_on(
    "seldon_core.wrapper:get_rest_microservice",
    "83ef203c4f7cfc96",
    "serves GET /api/v1.0/metadata from the view named Metadata, with what init_metadata(user_model) gave once",
)
relies_on(
    "seldon_core.seldon_methods:init_metadata",
    "a11c6672e828f6bb",
    "user_model.init_metadata() merged with MODEL_METADATA and validated; None when invalid",
)


def _stop(server: str, error: Exception, code: int) -> NoReturn:
    """End the process at start with one clear line (no traceback: the cause is the user's to fix)."""
    print(f"{server}: cannot load model: {error}", file=sys.stderr, flush=True)
    if code == 3:  # in a forked worker: 3 makes gunicorn stop the whole server, not restart the worker
        os._exit(code)
    raise SystemExit(code)


class EdgeModelServer(SeldonComponent):
    """A Seldon model server for one model on one runtime; subclasses only name the runtime."""

    runtime_class: ClassVar[type[ModelRuntime[Any]]]

    def __init__(self, **parameters: Any):
        super().__init__()
        try:
            self.model = EdgeModel(
                self.runtime_class, parameters, concurrent_requests(), metrics.hand_over, type(self).__name__
            )
        except ModelLoadError as e:
            _stop(type(self).__name__, e, code=1)
        self._v1 = V1Handler(self.model)
        adapter = install()  # here, in the main process, so every forked part has it
        tuned_malloc()
        adapter.rest_options = _rest_options(self.model.settings)
        adapter.values_limit = json_limits.values_limit(self.model.input_elements)
        adapter.grpc_reflection = self.model.settings.grpc_reflection
        # The one blueprint the wrapper registers on its REST app, with the Open Inference Protocol's routes;
        # its gRPC service joins Seldon's on the gRPC port.
        oip = OipModel(self.model, metrics.hand_over)
        self.model_error_handler = rest_app.rest_blueprint(oip_rest.routes(oip), _live_metadata(self))
        add_services(oip_grpc.registrar(oip))

    @property
    def settings(self) -> Settings:
        return self.model.settings

    def load(self) -> None:
        """Create this process's inference pool (one warm-up inference: the first request is not the slow one)."""
        try:
            self.model.load()
        except ModelLoadError as e:
            _stop(type(self).__name__, e, code=3)

    def release_inspected(self) -> None:
        """This process will not load the model (the wrapper's REST arbiter, whose workers load their own)."""
        self.model.release_inspected()

    def predict_raw(self, request: Any) -> Any:
        """Seldon's v1 protocol: the request decoded, predicted and answered in the request's own form."""
        return self._v1.predict(request)

    def health_status(self) -> dict[str, Any]:
        """Healthy only if a real inference runs."""
        return self.model.health()

    def health_status_raw(self) -> dict[str, Any]:
        """/health/status as the wrapper would build it, minus its call to metrics(), which would hand this
        worker's request metrics over under the "health" method label. 503 naming the part while any part of the
        server is down (supervisor.unavailable)."""
        down = supervisor.unavailable()
        if down:
            raise Unavailable("not ready: " + "; ".join(down))
        return {"jsonData": self.model.health()}

    def init_metadata(self) -> dict[str, Any]:
        model = self.model
        return {
            "name": model.file_name,
            "platform": model.runtime_class.name,
            "inputs": [spec.describe() for spec in model.signature.inputs],
            "outputs": [spec.describe() for spec in model.signature.outputs],
            "custom": model.describe(),
        }

    def metrics(self) -> list[dict]:
        """The request metrics due to hand over to Seldon (see MetricsBatch)."""
        return self.model.due_metrics()


def _live_metadata(component: EdgeModelServer) -> Blueprint:
    """/api/v1.0/metadata built at each request, as the wrapper builds it: the wrapper builds it once, with its app,
    and an in-place update (model_poll_interval) may replace the model's files since."""
    hook = Blueprint("live_metadata", __name__)

    @hook.before_app_request
    def metadata() -> Response | None:
        if request.endpoint != "Metadata":
            return None
        meta = seldon_methods.init_metadata(component)
        return None if meta is None else jsonify(meta)  # None: invalid metadata, which the wrapper answers itself

    return hook


def _rest_options(settings: Settings) -> RestOptions:
    """What the REST worker enforces, from the parameters."""
    return RestOptions(
        max_request_bytes=settings.max_request_bytes,
        header_timeout=settings.header_timeout,
        body_timeout=settings.body_timeout,
        max_connections=settings.max_connections,
        graceful_timeout=settings.graceful_timeout,
        bind_address=settings.bind_address,
        cors_origins=settings.cors_origin_list,
    )
