"""Seldon's gRPC server, bounded and honest: the message limit from max_request_bytes, every request's values
counted before it is parsed, reflection only when asked, the chosen bind address, our services beside
Seldon's, our errors with their own status codes; and the gRPC workers started as parts the supervisor watches.

As shipped, the wrapper sets gRPC's message limits only from the `seldon.io/grpc-max-message-size` annotation
(otherwise grpc's default: 4 MiB received), enables server reflection unconditionally, binds 0.0.0.0, lets
every exception of Predict become UNKNOWN, answers Metadata as it was built at start, and forks its gRPC
workers from a parent that only joins them.
"""

from __future__ import annotations

import contextlib
import functools
import signal
import types
from collections.abc import Callable, Iterator
from typing import Any

import grpc
from seldon_core import microservice, seldon_methods, wrapper
from seldon_core.flask_utils import ANNOTATION_GRPC_MAX_MSG_SIZE

from ..errors import EdgeError
from ..protocols.errors import grpc_abort
from ..protocols.grpc_limits import ValueBudget
from . import state
from .patches import patch, relies_on, swapped
from .rest_app import host_of

relies_on(
    "seldon_core.microservice:_run_grpc_server",
    "3d89ba00ca2e13bf",
    (
        "a gRPC worker: get_grpc_server(user_object, seldon_metrics, annotations=...), load(), "
        "add_insecure_port(bind_address), _wait_forever() (KeyboardInterrupt stops it)"
    ),
)
relies_on(
    "seldon_core.microservice:_reserve_grpc_port",
    "20ac9bc2f5d71f96",
    "binds the port with SO_REUSEPORT for the workers",
)


def add_services(registrar: Callable[[grpc.Server], None]) -> None:
    """Have `registrar(server)` add services to the gRPC server of every gRPC worker the wrapper starts."""
    state.current().grpc_registrars.append(registrar)


class _NoReflection(types.SimpleNamespace):
    """Stands in for grpc_reflection's module inside the wrapper while it builds a server without reflection."""

    @staticmethod
    def enable_server_reflection(service_names: Any, server: Any, pool: Any = None) -> None:
        return None


# What get_grpc_server reads from module globals while it builds a server (`swapped`'s arguments): grpc (for
# grpc.server, given our interceptor here) and reflection (swapped out for a server without).
_SERVER = {
    "target": "seldon_core.wrapper:get_grpc_server",
    "source_sha": "acbb23017329a8c3",
    "why": "creates the server with the module global grpc's server(executor, options=...)",
}
_REFLECTION = {**_SERVER, "why": "enables reflection through the module global `reflection`"}


def _counting_grpc(budget: int | None) -> types.SimpleNamespace:
    """The grpc module as the wrapper sees it while it builds a server: the same, but for `server`, which adds
    an interceptor counting every request's values before it is parsed (grpc_limits.ValueBudget)."""

    def server(*args: Any, interceptors: Any = (), **kwargs: Any) -> grpc.Server:
        return grpc.server(*args, interceptors=[ValueBudget(budget), *interceptors], **kwargs)

    return types.SimpleNamespace(**{**vars(grpc), "server": server})


def _build_servers_our_way() -> None:
    get_grpc_server = wrapper.get_grpc_server

    @functools.wraps(get_grpc_server)
    def ours(user_model: Any, seldon_metrics: Any, annotations: dict | None = None, **kwargs: Any) -> grpc.Server:
        """The wrapper's server with the message limit of max_request_bytes (an explicit annotation still wins:
        grpc itself answers RESOURCE_EXHAUSTED before reading an oversize message), reflection only with
        grpc_reflection=true, and our services added."""
        adapter = state.current()
        adapter.process_metrics = seldon_metrics
        annotations = {ANNOTATION_GRPC_MAX_MSG_SIZE: str(adapter.rest_options.max_request_bytes), **(annotations or {})}
        # get_grpc_server runs once per gRPC worker, in its main thread, before it serves: nothing else looks at
        # wrapper.reflection and wrapper.grpc meanwhile.
        no_reflection = _NoReflection(SERVICE_NAME=wrapper.reflection.SERVICE_NAME)
        with contextlib.ExitStack() as stack:
            stack.enter_context(swapped(wrapper, "grpc", _counting_grpc(adapter.values_limit), **_SERVER))
            if not adapter.grpc_reflection:
                stack.enter_context(swapped(wrapper, "reflection", no_reflection, **_REFLECTION))
            server = get_grpc_server(user_model, seldon_metrics, annotations=annotations, **kwargs)
        for registrar in adapter.grpc_registrars:
            registrar(server)
        return server

    patch(
        wrapper,
        "get_grpc_server",
        ours,
        source_sha=_REFLECTION["source_sha"],
        why=(
            "builds the gRPC server; looked up as a module attribute per worker; message limits only from the "
            "seldon.io/grpc-max-message-size annotation"
        ),
    )


def _answer_our_errors() -> None:
    """Seldon's Predict lets every exception become UNKNOWN with "Exception calling application: " in front of
    the message; ours get their own code (edgeservers/protocols/errors.py), with the message alone."""
    predict = wrapper.SeldonModelGRPC.Predict

    @functools.wraps(predict)
    def predict_with_status(self: Any, request_grpc: Any, context: grpc.ServicerContext) -> Any:
        try:
            return predict(self, request_grpc, context)
        except EdgeError as e:
            grpc_abort(context, e)

    patch(
        wrapper.SeldonModelGRPC,
        "Predict",
        predict_with_status,
        source_sha="74e3f66d4ef872a2",
        why="the Model/Predict handler; any exception becomes UNKNOWN",
    )


def _live_metadata() -> None:
    """Seldon's Model/Metadata and Seldon/ModelMetadata answer what init_metadata gave when the servicer was
    built; here it is built at each call, as the REST metadata is: an in-place update (model_poll_interval) may
    have replaced the model's files since."""
    relies_on(
        "seldon_core.utils:json_to_seldon_model_metadata",
        "7c8d01628c4007be",
        "the metadata dict (init_metadata's) as a SeldonModelMetadata message; looked up in seldon_core.wrapper",
    )
    for name, sha in (("Metadata", "e6a1af88db02030d"), ("ModelMetadata", "9001f109c2fa6239")):
        patch(
            wrapper.SeldonModelGRPC,
            name,
            _metadata_at_each_call(name),
            source_sha=sha,
            why="answers json_to_seldon_model_metadata(self.metadata_data), built once in __init__",
        )


def _metadata_at_each_call(name: str) -> Callable[..., Any]:
    def metadata(self: Any, request_grpc: Any, context: grpc.ServicerContext) -> Any:
        return wrapper.json_to_seldon_model_metadata(seldon_methods.init_metadata(self.user_model))

    metadata.__name__ = metadata.__qualname__ = name
    return metadata


class GrpcWorkers:
    """What _make_grpc_server returns here: the gRPC workers to start, as parts of the supervisor."""

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
            adapter = state.current()
            host = host_of(adapter.rest_options.bind_address)
            adapter.grpc_endpoints.append((host, port))
            yield f"{host}:{port}"

    def target(self, bind_address: str) -> Callable[[], None]:
        """A gRPC worker to fork: the wrapper's own, which loads its own copy of the model."""
        return functools.partial(
            _grpc_worker, self.user_object, self.seldon_metrics, self.args, self.annotations, bind_address
        )

    def serve_here(self, bind_address: str) -> grpc.Server:
        """The one gRPC server in this process, on the component (and model pool) REST serves from: no fork, no
        second copy of the model; the REST worker loads the model (until then gRPC answers UNAVAILABLE)."""
        server = wrapper.get_grpc_server(
            self.user_object,
            self.seldon_metrics,
            annotations=self.annotations,
            trace_interceptor=_tracing(self.args),
            num_threads=self.args.grpc_threads,
        )
        server.add_insecure_port(bind_address)
        server.start()
        return server


def _tracing(args: Any) -> Any:
    """The tracing interceptor the wrapper gives its gRPC workers with --tracing (Jaeger), else None."""
    if not args.tracing:
        return None
    from grpc_opentracing import open_tracing_server_interceptor
    from seldon_core.utils import setup_tracing

    return open_tracing_server_interceptor(setup_tracing(args.interface_name))


def _grpc_worker(*args: Any) -> None:
    signal.signal(signal.SIGTERM, _stop_grpc_worker)
    with contextlib.suppress(KeyboardInterrupt):
        microservice._run_grpc_server(*args)


def _stop_grpc_worker(signum: int, frame: Any) -> None:
    """SIGTERM in a gRPC worker: noted as a stop, then KeyboardInterrupt, on which the wrapper stops its server."""
    state.current().note_stop()
    raise KeyboardInterrupt


def _make_workers(user_object: Any, seldon_metrics: Any, args: Any, annotations: dict) -> GrpcWorkers:
    return GrpcWorkers(user_object, seldon_metrics, args, annotations)


def install() -> None:
    _build_servers_our_way()
    _answer_our_errors()
    _live_metadata()
    patch(
        microservice,
        "_make_grpc_server",
        _make_workers,
        source_sha="927b38ed32029257",
        why="replaced: reserved the port, bound 0.0.0.0, forked and joined the workers",
    )
