"""The ways things go wrong: a request the server cannot answer as asked (EdgeError and its kinds, each
with the HTTP status every protocol maps from), and a model or parameter that cannot load.

The family knows no transport: each protocol turns an EdgeError into its own answer in one place
(edgeservers/protocols/errors.py), so a new limit is one `raise` and every door answers it alike.
"""

from __future__ import annotations


class EdgeError(Exception):
    """A request the server cannot answer as asked. The message names what arrived, what was expected and,
    for a limit, the parameter that sets it; `reason` is a short machine-readable name of the kind."""

    status = 500
    reason = "MICROSERVICE_INTERNAL_ERROR"

    def __init__(self, message: str, reason: str | None = None):
        super().__init__(message)
        self.message = message
        if reason is not None:
            self.reason = reason

    def __str__(self) -> str:
        return self.message


class BadRequest(EdgeError):
    """A malformed request: 400."""

    status = 400
    reason = "MICROSERVICE_BAD_DATA"


class Forbidden(BadRequest):
    """A request for something the server may not touch (e.g. an object outside image_store): 403."""

    status = 403
    reason = "MICROSERVICE_FORBIDDEN"


class NotFound(BadRequest):
    """A request naming something that does not exist (an object, a model, an endpoint): 404."""

    status = 404
    reason = "MICROSERVICE_NOT_FOUND"


class TooLarge(BadRequest):
    """A request over a limit; the message names the size, the limit and the parameter that sets it: 413."""

    status = 413
    reason = "MICROSERVICE_REQUEST_TOO_LARGE"


class Unavailable(EdgeError):
    """A part of the server is down or not ready yet: 503 (the same request may succeed later)."""

    status = 503
    reason = "MICROSERVICE_UNAVAILABLE"


class StoreError(EdgeError):
    """An object store the request needs answered with an error (502), is unreachable (503) or did not
    answer in time (504): unlike a 4xx, the same request may succeed later."""

    REASONS = {502: "STORE_ERROR", 503: "STORE_UNAVAILABLE", 504: "STORE_TIMEOUT"}

    def __init__(self, message: str, status: int):
        self.status = status
        super().__init__(message, self.REASONS[status])


class ModelLoadError(Exception):
    """The model or the server's parameters cannot be used: the server stops at start with this one line."""
