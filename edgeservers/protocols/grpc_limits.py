"""Every gRPC request counted before protobuf parses it, whatever service and method it is for (Seldon's v1
services, the Open Inference Protocol's): a server interceptor puts the count in front of each unary method's
own deserializer, with the method's request type from the protobuf descriptor pool.

protobuf 3.20, which seldon-core pins, parses in pure Python on Python 3.11, every element of a repeated field
a Python object: a 15 MB Seldon `data.ndarray` of zeros parsed into 1.4 million Value messages, +1 GB and 9 s
(docs/security.md). Counted first (protobuf_budget), a message past the model's value budget costs only the
walk that finds it so.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
from google.protobuf import descriptor_pool
from google.protobuf.descriptor import Descriptor

from ..errors import BadRequest, EdgeError, TooLarge
from . import json_limits, protobuf_budget
from .errors import grpc_abort


def _request_type(method: str) -> Descriptor | None:
    """The request message of "/package.Service/Method", from the descriptor pool; None when not there."""
    service, _, name = method.strip("/").rpartition("/")
    try:
        return descriptor_pool.Default().FindServiceByName(service).FindMethodByName(name).input_type
    except KeyError:
        return None


def counted(deserialize: Callable[[bytes], Any], descriptor: Descriptor, budget: int) -> Callable[[bytes], Any]:
    """`deserialize` after counting the message's values; past `budget`, the error to answer instead of a message."""

    def parse(data: bytes) -> Any:
        try:
            protobuf_budget.elements(data, descriptor, budget)
        except protobuf_budget.OverBudget as e:
            return TooLarge(
                f"the {descriptor.name} holds more than {budget} values (counted before it is parsed, {e.elements} "
                f"so far): twice the model's input size plus {json_limits.SLACK} (set by the model, no parameter); "
                "send tensors as binary (tftensor, raw_input_contents)",
                "TOO_MANY_VALUES",
            )
        except protobuf_budget.Malformed as e:
            return BadRequest(f"the message is not a valid {descriptor.name}: {e}")
        return deserialize(data)

    return parse


def _answering(behaviour: Callable[[Any, grpc.ServicerContext], Any]) -> Callable[[Any, grpc.ServicerContext], Any]:
    def handle(request: Any, context: grpc.ServicerContext) -> Any:
        if isinstance(request, EdgeError):  # refused by `counted`
            grpc_abort(context, request)
        return behaviour(request, context)

    return handle


class ValueBudget(grpc.ServerInterceptor):
    """Counts the values of every unary request against `budget` before it is parsed (None: no count, for a
    model with a dynamic dimension, where only the message size limit applies)."""

    def __init__(self, budget: int | None):
        self.budget = budget

    def intercept_service(self, continuation: Callable[[Any], Any], details: grpc.HandlerCallDetails) -> Any:
        handler = continuation(details)
        if handler is None or self.budget is None or handler.unary_unary is None:
            return handler
        descriptor = _request_type(details.method)
        if descriptor is None or handler.request_deserializer is None:
            return handler
        return grpc.unary_unary_rpc_method_handler(
            _answering(handler.unary_unary),
            request_deserializer=counted(handler.request_deserializer, descriptor, self.budget),
            response_serializer=handler.response_serializer,
        )
