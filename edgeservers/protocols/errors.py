"""An EdgeError as each protocol answers it: one status table, one writer per protocol.

Seldon's v1 REST body, the Open Inference Protocol's `{"error"}` body and a gRPC status (both gRPC
services) all carry the same message; the HTTP status is the error's own, the gRPC code the table's.
"""

from __future__ import annotations

from typing import Any, NoReturn

import grpc

from ..errors import EdgeError

# The gRPC status a request error gets for its HTTP status (else INTERNAL).
GRPC_CODES = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    502: grpc.StatusCode.UNAVAILABLE,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}


def request_too_large(what: str, limit: int) -> str:
    """The message of a request body over max_request_bytes, on every door that counts one."""
    return (
        f"request body of {what} is larger than max_request_bytes={limit} ({limit / (1 << 20):.1f} MiB); "
        "the parameter max_request_bytes sets it (send images as JPEG binData, tensors as tftensor)"
    )


def grpc_code(status: int) -> grpc.StatusCode:
    return GRPC_CODES.get(status, grpc.StatusCode.INTERNAL)


def v1_body(status: int, reason: str, info: str) -> dict[str, Any]:
    """Seldon's v1 error body, with the HTTP status as its code (Seldon's own writes -1 there)."""
    return {"status": {"status": 1, "info": info, "code": status, "reason": reason}}


def v1_error(error: EdgeError) -> dict[str, Any]:
    return v1_body(error.status, error.reason, error.message)


def oip_error(error: EdgeError) -> dict[str, Any]:
    """The Open Inference Protocol's error body."""
    return {"error": error.message}


def grpc_abort(context: grpc.ServicerContext, error: EdgeError) -> NoReturn:
    """End a gRPC call (v1 or OIP) with the error's code and message."""
    context.abort(grpc_code(error.status), error.message)
    raise AssertionError("grpc's abort returned")  # it raises; this line tells the type checker so
