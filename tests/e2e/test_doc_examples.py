"""Every runnable example of README.md and docs/*.md, run as written (tests/support/doc_examples.py says how the
blocks are read): against `make serve` where it calls the server (one server per set of make serve variables, for
the whole module), its output compared with the one shown. The cluster examples are rendered and validated by
tests/kubernetes/test_doc_examples.py; `python -m tests.support.doc_examples` lists which block is which."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator

import pytest

from tests.support.doc_examples import PORTS, Block, differences, every_block, interpreter, localized, steps
from tests.support.harness import MAKE, PORT_TAKEN, ServerProcess, free_port, grpc_ready, http_ok
from tests.support.paths import ROOT

RUN = [block for block in every_block() if block.how == "run"]


def _ready(ports: dict[str, int]) -> Callable[[], bool]:
    return lambda: http_ok(f"http://127.0.0.1:{ports['rest']}/health/ping") and grpc_ready(f"127.0.0.1:{ports['grpc']}")


def _start(variables: tuple[str, ...]) -> tuple[ServerProcess, dict[str, int]]:
    """`make serve <variables>` on free ports, as the docs run it on 9000/5000/6000."""
    for attempt in (1, 2):
        ports = {name: free_port() for name in PORTS}
        names = {"rest": "REST_PORT", "grpc": "GRPC_PORT", "metrics": "METRICS_PORT"}
        command = [*MAKE, "serve", *variables, *(f"{names[n]}={port}" for n, port in ports.items())]
        server = ServerProcess(command, dict(os.environ), name="make serve " + " ".join(variables))
        try:
            server.start(_ready(ports))
            return server, ports
        except RuntimeError as e:  # a port taken between free_port() and the bind: once more on others
            server.stop()
            if attempt == 2 or not any(words in str(e) for words in PORT_TAKEN):
                raise
    raise AssertionError("unreachable")


@pytest.fixture(scope="module")
def make_serve() -> Iterator[Callable[[tuple[str, ...]], dict[str, int]]]:
    """The ports of `make serve <variables>`, started the first time a block asks for it."""
    started: dict[tuple[str, ...], tuple[ServerProcess, dict[str, int]]] = {}

    def serve(variables: tuple[str, ...]) -> dict[str, int]:
        if variables not in started:
            started[variables] = _start(variables)
        return started[variables][1]

    yield serve
    for server, _ in started.values():
        server.stop()


@pytest.mark.parametrize("block", RUN, ids=[block.id for block in RUN])
def test_doc_example_runs_as_shown(block: Block, make_serve, tmp_path):
    variables = block.server()
    ports = make_serve(variables) if variables is not None else dict(PORTS)
    for step in steps(block):
        code = localized(step.code, ports, tmp_path)
        done = subprocess.run(
            [*interpreter(block), code], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
        )
        assert done.returncode == 0, f"{block.id}: {step.code}exited {done.returncode}:\n{done.stderr[-3000:]}"
        if step.shown is not None:
            assert differences(step.shown, done.stdout) == [], f"{block.id}: {step.code}printed:\n{done.stdout}"
