"""The ways things go wrong: a request the server refuses (HTTP 4xx) and a model that cannot load."""

from seldon_core.flask_utils import SeldonMicroserviceException


class BadRequest(SeldonMicroserviceException):
    """A malformed request. The wrapper answers it with HTTP 400 (gRPC: an error status).

    The message names what was received and what was expected.
    """

    status = 400
    reason_code = "MICROSERVICE_BAD_DATA"

    def __init__(self, message: str):
        super().__init__(message, status_code=self.status, reason=self.reason_code)

    def __str__(self) -> str:
        return self.message


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


class Unavailable(SeldonMicroserviceException):
    """A part of the server is down: readiness answers HTTP 503 naming it."""

    def __init__(self, message: str):
        super().__init__(message, status_code=503, reason="MICROSERVICE_UNAVAILABLE")

    def __str__(self) -> str:
        return self.message


class ModelLoadError(Exception):
    """The model or the server's parameters cannot be used: the server stops at start."""
