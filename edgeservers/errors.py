"""The ways things go wrong: a bad request (HTTP 400), a request over a limit (HTTP 413), a model that cannot load."""

from seldon_core.flask_utils import SeldonMicroserviceException


class BadRequest(SeldonMicroserviceException):
    """A malformed request. The wrapper answers it with HTTP 400 (gRPC: an error status).

    The message names what was received and what was expected.
    """

    def __init__(self, message: str):
        super().__init__(message, status_code=400, reason="MICROSERVICE_BAD_DATA")

    def __str__(self) -> str:
        return self.message


class TooLarge(SeldonMicroserviceException):
    """A request over one of the server's limits. The wrapper answers it with HTTP 413 (gRPC: an error status).

    The message names what arrived, the limit and the parameter that sets it.
    """

    def __init__(self, message: str):
        super().__init__(message, status_code=413, reason="MICROSERVICE_REQUEST_TOO_LARGE")

    def __str__(self) -> str:
        return self.message


class Unavailable(SeldonMicroserviceException):
    """A part of the server is down: readiness answers HTTP 503 naming it."""

    def __init__(self, message: str):
        super().__init__(message, status_code=503, reason="MICROSERVICE_UNAVAILABLE")

    def __str__(self) -> str:
        return self.message


class ModelLoadError(Exception):
    """The model or the server's parameters cannot be used: the server stops at start."""
