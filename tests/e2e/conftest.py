"""End-to-end fixtures: real `seldon-core-microservice` process trees on free loopback ports."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.support.clients import ModelServer
from tests.support.fixtures import DEMO, DETECTOR, shared_server


@pytest.fixture(scope="module")
def start_server() -> Iterator[Callable[..., ModelServer]]:
    """Start real servers that stop when the module's tests end: start_server("TFLiteServer", model_uri=...)."""
    started: list[ModelServer] = []

    def start(server_class: str, env: dict[str, str] | None = None, **params: Any) -> ModelServer:
        server = ModelServer(server_class, env, **params).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


mobilenet = shared_server("start_server", "TFLiteServer", **DEMO)
face_mask = shared_server("start_server", "TFLiteServer", **DETECTOR)
