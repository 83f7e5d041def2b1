"""The benchmark's server: a real `seldon-core-microservice` started through the tests' harness
(tests/support/harness.py), its cold start timed to the first prediction and its memory measured."""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests

from tests.support.harness import Microservice
from tests.support.paths import ROOT, image_bytes

_checkout = ROOT


def use_checkout(root: str | Path) -> None:
    """Start servers from another checkout (e.g. a worktree of an earlier commit), measured by this harness
    and against this tree's in-process reference."""
    global _checkout
    _checkout = Path(root).resolve()


def checkout() -> Path:
    """The checkout whose server is started (this one unless use_checkout() said otherwise)."""
    return _checkout


def print_rows(table: Callable[[], list[dict[str, Any]]], argv: list[str]) -> None:
    """`python -m bench.<table> [ROOT]`: each row of `table()` as a JSON line, the server started from ROOT's
    checkout when one is given (e.g. the unmodified code, measured by this harness)."""
    if len(argv) > 1:
        use_checkout(argv[1])
    for row in table():
        print(json.dumps(row), flush=True)


class Server(Microservice):
    """One `seldon-core-microservice <interface>` process tree (REST + gRPC + metrics) on free ports, run
    from the checkout use_checkout() chose, listening as the wrapper does (unless `loopback`: the benchmark
    measures the server as shipped). `url` is the predictions endpoint."""

    def __init__(
        self, interface: str, params: dict[str, Any], env: dict[str, str] | None = None, loopback: bool = False
    ):
        super().__init__(interface, params, env, loopback=loopback, cwd=_checkout)
        self.url += "/api/v1.0/predictions"
        self.grpc_target = f"127.0.0.1:{self.grpc_port}"

    # A different signature from Microservice.start (hence the ignore): the first prediction says when it is ready.
    def start(self, first_prediction: Callable[[Server], bool], timeout: float = 120.0) -> Server:  # type: ignore[override]
        """Start and poll `first_prediction` until it succeeds: cold start = process start to that moment."""
        super().start(lambda: first_prediction(self), timeout)
        return self

    @property
    def cold_start_s(self) -> float | None:
        return self.ready_s


def answers_a_photo(server: Server) -> bool:
    """Whether `server` answers a REST prediction of images/parrot.jpg (a form file) with 200: ready."""
    reply = requests.post(server.url, files={"binData": ("parrot.jpg", image_bytes("parrot.jpg"))}, timeout=10)
    return reply.status_code == 200


def print_result(result: dict[str, Any], as_json: bool) -> None:
    """A measurement's result: one JSON line, or a `key: value` line per entry."""
    if as_json:
        print(json.dumps(result))
        return
    for key, value in result.items():
        print(f"{key}: {value}")
    sys.stdout.flush()


def run_from_checkout(main: Callable[[], None]) -> None:
    """`python -m bench.<module>`: `main()` from the checkout's root, without moto's access log."""
    os.chdir(ROOT)
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    main()
