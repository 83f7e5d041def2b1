"""The ways things go wrong: a request the server refuses (HTTP 4xx), a store it depends on failing (5xx),
and a model that cannot load."""

import grpc
from seldon_core.flask_utils import SeldonMicroserviceException

# The gRPC status a request error gets for its HTTP status, through every gRPC service (v1 and OIP).
GRPC_CODES = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    502: grpc.StatusCode.UNAVAILABLE,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}


class EdgeError(SeldonMicroserviceException):
    """A request the server cannot answer as asked, with the HTTP status every protocol maps from
    (REST v1 and OIP bodies, gRPC codes through GRPC_CODES). The message names what arrived, what was
    expected and, for a limit, the parameter that sets it."""

    status = 500
    reason_code = "MICROSERVICE_INTERNAL_ERROR"

    def __init__(self, message: str):
        super().__init__(message, status_code=self.status, reason=self.reason_code)

    def __str__(self) -> str:
        return self.message


class BadRequest(EdgeError):
    """A malformed request: 400."""

    status = 400
    reason_code = "MICROSERVICE_BAD_DATA"


class Forbidden(BadRequest):
    """A request for something the server may not touch (e.g. an object outside image_store): 403."""

    status = 403
    reason_code = "MICROSERVICE_FORBIDDEN"


class NotFound(BadRequest):
    """A request naming something that does not exist (e.g. a missing object): 404."""

    status = 404
    reason_code = "MICROSERVICE_NOT_FOUND"


class TooLarge(BadRequest):
    """A request over a limit; the message names the size, the limit and the parameter that sets it: 413."""

    status = 413
    reason_code = "MICROSERVICE_REQUEST_TOO_LARGE"


class StoreError(EdgeError):
    """An object store the request needs answered with an error (502), is unreachable (503) or did not
    answer in time (504): unlike a 4xx, the same request may succeed later."""

    def __init__(self, message: str, status: int):
        self.status = status
        self.reason_code = {502: "STORE_ERROR", 503: "STORE_UNAVAILABLE", 504: "STORE_TIMEOUT"}[status]
        super().__init__(message)


class Unavailable(EdgeError):
    """A part of the server is down: readiness answers HTTP 503 naming it."""

    status = 503
    reason_code = "MICROSERVICE_UNAVAILABLE"


class ModelLoadError(Exception):
    """The model or the server's parameters cannot be used: the server stops at start."""
