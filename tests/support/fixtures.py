"""The fixtures every tier may use, none of which starts a process that listens: Seldon's metrics store,
servers built in-process (`load_server`, the two shared ones, `fail`) and the external delegate built here.
The root conftest.py registers this module; a tier's own fixtures are in its conftest.py."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.clients import InProcessServer, fail_in_process
from tests.support.paths import FACE_MASK, MOBILENET_V2

TINY_DELEGATE_SOURCE = Path(__file__).resolve().parent / "delegate" / "tiny_delegate.c"

DEMO = {"model_uri": str(MOBILENET_V2)}  # nothing but model_uri: classification is the default
DETECTOR = {"model_uri": str(FACE_MASK), "postprocess": "detection"}


@pytest.fixture(scope="session")
def seldon_metrics() -> Any:
    """Seldon's metrics store (it starts a multiprocessing Manager: one for the whole run)."""
    from seldon_core.metrics import SeldonMetrics

    return SeldonMetrics()


@pytest.fixture(scope="module")
def load_server(seldon_metrics: Any) -> Callable[..., InProcessServer]:
    """Build servers in-process: load_server("TFLiteServer", model_uri=...); `own_metrics=True` gives the
    server a metrics store of its own (for tests that count what reaches Prometheus)."""

    def build(server_class: str, own_metrics: bool = False, **params: Any) -> InProcessServer:
        from seldon_core.metrics import SeldonMetrics

        return InProcessServer(server_class, SeldonMetrics() if own_metrics else seldon_metrics, **params)

    return build


@pytest.fixture
def fail(capsys: pytest.CaptureFixture[str]) -> Callable[..., str]:
    """fail(server_class, **params): build the server in-process; it must exit non-zero with one line."""

    def build(server_class: str, **params: Any) -> str:
        return fail_in_process(server_class, capsys, **params)

    return build


def shared_server(starter: str, server_class: str, **params: Any) -> Any:
    """A module-scoped fixture: `server_class` with `params`, from `starter` (a fixture such as load_server)."""

    @pytest.fixture(scope="module")
    def server(request: pytest.FixtureRequest) -> Any:
        return request.getfixturevalue(starter)(server_class, **params)

    return server


mobilenet_in_process = shared_server("load_server", "TFLiteServer", **DEMO)
face_mask_in_process = shared_server("load_server", "TFLiteServer", **DETECTOR)


@dataclass(frozen=True)
class TinyDelegate:
    """tests/support/delegate/tiny_delegate.c built with the system C compiler: `library`, a real external
    delegate (its `mode` option picks what it does), and `not_a_delegate`, a library without the delegate
    interface."""

    library: Path
    not_a_delegate: Path


@pytest.fixture(scope="session")
def tiny_delegate(tmp_path_factory: pytest.TempPathFactory) -> TinyDelegate:
    compiler = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")
    if compiler is None:
        pytest.fail(f"the delegate tests build {TINY_DELEGATE_SOURCE}: install a C compiler (apt-get install gcc)")
    out = tmp_path_factory.mktemp("delegate")
    built = TinyDelegate(out / "libtiny_delegate.so", out / "libnot_a_delegate.so")
    for library, flags in ((built.library, []), (built.not_a_delegate, ["-DWITHOUT_PLUGIN_API"])):
        command = [compiler, "-shared", "-fPIC", "-O2", "-Wall", "-Wextra", "-Werror", *flags, "-o", str(library)]
        done = subprocess.run([*command, str(TINY_DELEGATE_SOURCE)], capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            pytest.fail(f"{' '.join(command)} {TINY_DELEGATE_SOURCE} failed:\n{done.stderr}")
    return built
