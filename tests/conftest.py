"""Test fixtures: the servers end to end (the real `seldon-core-microservice`, started through
tests/harness.py) or in-process (the component inside Seldon's own Flask app and gRPC servicer),
both with the same clients, and the plain TFLite interpreter as ground truth."""

from __future__ import annotations

import base64
import functools
import importlib
import io
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import requests
from seldon_core.proto import prediction_pb2, prediction_pb2_grpc

from harness import Microservice, free_port, parameters  # noqa: F401 (free_port: tests import it from here)

pytest_plugins = ("services",)  # the shared fixtures web (HTTP server) and s3_server (moto S3)

ROOT = Path(__file__).resolve().parent.parent
MODELS = ROOT / "models"
IMAGES = ROOT / "images"

MOBILENET_V2 = MODELS / "mobilenet_v2_quant"
MOBILENET_V1 = MODELS / "mobilenet_v1_025_quant"
FACE_MASK = MODELS / "face_mask"
DEEPLAB = MODELS / "deeplabv3"
EDGETPU_MODEL = MODELS / "mobilenet_v1_025_quant_edgetpu"
TINY_DELEGATE_SOURCE = ROOT / "tests" / "delegate" / "tiny_delegate.c"


def image_bytes(name: str) -> bytes:
    return (IMAGES / name).read_bytes()


class Clients:
    """What the tests send, the same for a server end to end and in-process."""

    def rest(self, body: Any = None, **kwargs: Any) -> Any:
        raise NotImplementedError

    def rest_ok(self, body: Any = None, **kwargs: Any) -> dict:
        response = self.rest(body, **kwargs)
        assert response.status_code == 200, response.text
        return response.json()

    def image(self, name: str) -> dict:
        """A JPEG/PNG/BMP from images/ as JSON binData."""
        return self.rest_ok({"binData": base64.b64encode(image_bytes(name)).decode()})


class ModelServer(Microservice, Clients):
    """One real `seldon-core-microservice` process tree (REST + gRPC + metrics) on free loopback ports."""

    def __init__(self, server_class: str, env: dict[str, str] | None = None, **params: Any):
        super().__init__(server_class, params, env, stderr_pipe=True)  # proc.stderr: what it wrote, once it exits

    def channel(self) -> grpc.Channel:
        if not hasattr(self, "_channel"):
            self._channel = grpc.insecure_channel(
                f"127.0.0.1:{self.grpc_port}",
                options=[("grpc.max_receive_message_length", 64 << 20), ("grpc.max_send_message_length", 64 << 20)],
            )
        return self._channel

    def stop(self, timeout: float = 20) -> None:
        if hasattr(self, "_channel"):
            self._channel.close()
        super().stop(timeout)

    def get(self, path: str) -> requests.Response:
        return requests.get(self.url + path, timeout=10)

    def rest(self, body: Any = None, **kwargs: Any) -> requests.Response:
        if body is not None:
            kwargs["json"] = body
        return requests.post(self.url + "/api/v1.0/predictions", timeout=60, **kwargs)

    def grpc(self, message: prediction_pb2.SeldonMessage) -> prediction_pb2.SeldonMessage:
        return prediction_pb2_grpc.ModelStub(self.channel()).Predict(message, timeout=60)

    def prometheus(self) -> str:
        return requests.get(f"http://127.0.0.1:{self.metrics_port}/prometheus", timeout=10).text


@pytest.fixture(scope="module")
def start_server() -> Iterator[Any]:
    """Start real servers that stop when the module's tests end: start_server("TFLiteServer", model_uri=...)."""
    started: list[ModelServer] = []

    def start(server_class: str, env: dict[str, str] | None = None, **params: Any) -> ModelServer:
        server = ModelServer(server_class, env, **params).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


# --- in-process: the component inside Seldon's own REST app and gRPC servicer ---------------------


class Reply:
    """A Flask test response, read as the tests read a requests.Response."""

    def __init__(self, response: Any):
        self.status_code = response.status_code
        self.text = response.get_data(as_text=True)

    def json(self) -> Any:
        return json.loads(self.text)


class InProcessServer(Clients):
    """A server class built as the wrapper builds it (PREDICTIVE_UNIT_PARAMETERS parsed by Seldon,
    __init__, load()), behind `seldon_core.wrapper`'s Flask app (its test client: Seldon's request
    parsing, error handlers and JSON writing) and its gRPC servicer (messages serialized both ways,
    as on the wire). Only gunicorn, grpc's transport and the processes are left out."""

    def __init__(self, server_class: str, metrics: Any, **params: Any):
        from seldon_core import wrapper

        self.component = build_component(server_class, params)
        self.component.load()
        self.metrics = metrics
        # looked up now, after the component's install() patched the wrapper (keeping this app's metrics store)
        self.client = wrapper.get_rest_microservice(self.component, metrics).test_client()
        self.servicer = wrapper.SeldonModelGRPC(self.component, metrics)

    def get(self, path: str) -> Reply:
        return Reply(self.client.get(path))

    def rest(self, body: Any = None, **kwargs: Any) -> Reply:
        """POST /api/v1.0/predictions with requests' keywords: json body, data, headers, files."""
        if body is not None:
            kwargs["data"] = json.dumps(body)
            kwargs["headers"] = {"Content-Type": "application/json", **kwargs.get("headers", {})}
        if "files" in kwargs:
            kwargs["data"] = {
                k: (io.BytesIO(content), filename) for k, (filename, content) in kwargs.pop("files").items()
            }
            kwargs["content_type"] = "multipart/form-data"
        return Reply(self.client.post("/api/v1.0/predictions", **kwargs))

    def grpc(self, message: prediction_pb2.SeldonMessage) -> prediction_pb2.SeldonMessage:
        request = prediction_pb2.SeldonMessage.FromString(message.SerializeToString())
        reply = self.servicer.Predict(request, None)
        return prediction_pb2.SeldonMessage.FromString(reply.SerializeToString())

    def prometheus(self) -> str:
        """What Seldon's metrics app serves from this server's metrics store."""
        from seldon_core import wrapper

        return (
            wrapper.get_metrics_microservice(self.metrics)
            .test_client()
            .get(wrapper.METRICS_ENDPOINT)
            .get_data(as_text=True)
        )


def our_line(server_class: str, stderr: str) -> str:
    """The one line a server that cannot load its model writes (and no traceback anywhere)."""
    ours = [line for line in stderr.splitlines() if line.startswith(f"{server_class}: cannot load model:")]
    assert len(ours) == 1, stderr[-3000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    return ours[0]


@pytest.fixture
def fail(capsys):
    """fail(server_class, **params): build the server in-process; it must exit non-zero with one line."""

    def build(server_class: str, **params) -> str:
        capsys.readouterr()
        with pytest.raises(SystemExit) as stopped:
            build_component(server_class, params)
        assert stopped.value.code != 0
        return our_line(server_class, capsys.readouterr().err)

    return build


def build_component(server_class: str, params: dict[str, Any]) -> Any:
    """`server_class(**parameters)` as the wrapper calls it: PREDICTIVE_UNIT_PARAMETERS parsed by Seldon."""
    from seldon_core.microservice import parse_parameters

    cls = getattr(importlib.import_module(server_class), server_class)
    return cls(**parse_parameters(json.loads(parameters(params))))


@pytest.fixture(scope="session")
def seldon_metrics() -> Any:
    """Seldon's metrics store (it starts a multiprocessing Manager: one for the whole run)."""
    from seldon_core.metrics import SeldonMetrics

    return SeldonMetrics()


@pytest.fixture(scope="module")
def load_server(seldon_metrics) -> Any:
    """Build servers in-process: load_server("TFLiteServer", model_uri=...); `own_metrics=True` gives the
    server a metrics store of its own (for tests that count what reaches Prometheus)."""

    def build(server_class: str, own_metrics: bool = False, **params: Any) -> InProcessServer:
        from seldon_core.metrics import SeldonMetrics

        return InProcessServer(server_class, SeldonMetrics() if own_metrics else seldon_metrics, **params)

    return build


# --- the shared servers: the same two, end to end and in-process -----------------------------------


def _server(starter: str, server_class: str, **params: Any) -> Any:
    """A module-scoped fixture: `server_class` with `params`, from `starter` (start_server or load_server)."""

    @pytest.fixture(scope="module")
    def server(request: pytest.FixtureRequest) -> Any:
        return request.getfixturevalue(starter)(server_class, **params)

    return server


DEMO = {"model_uri": str(MOBILENET_V2)}  # nothing but model_uri: classification is the default
DETECTOR = {"model_uri": str(FACE_MASK), "postprocess": "detection"}
mobilenet = _server("start_server", "TFLiteServer", **DEMO)
face_mask = _server("start_server", "TFLiteServer", **DETECTOR)
mobilenet_in_process = _server("load_server", "TFLiteServer", **DEMO)
face_mask_in_process = _server("load_server", "TFLiteServer", **DETECTOR)


# --- a TFLite external delegate, built here ------------------------------------------------


@dataclass(frozen=True)
class TinyDelegate:
    """tests/delegate/tiny_delegate.c built with the system C compiler: `library`, a real external delegate
    (its `mode` option picks what it does), and `not_a_delegate`, a library without the delegate interface."""

    library: Path
    not_a_delegate: Path


@pytest.fixture(scope="session")
def tiny_delegate(tmp_path_factory: pytest.TempPathFactory) -> TinyDelegate:
    compiler = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")
    if compiler is None:
        pytest.fail(
            "the delegate tests build tests/delegate/tiny_delegate.c: install a C compiler (apt-get install gcc)"
        )
    out = tmp_path_factory.mktemp("delegate")
    built = TinyDelegate(out / "libtiny_delegate.so", out / "libnot_a_delegate.so")
    for library, flags in ((built.library, []), (built.not_a_delegate, ["-DWITHOUT_PLUGIN_API"])):
        command = [compiler, "-shared", "-fPIC", "-O2", "-Wall", "-Wextra", "-Werror", *flags, "-o", str(library)]
        done = subprocess.run([*command, str(TINY_DELEGATE_SOURCE)], capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            pytest.fail(f"{' '.join(command)} {TINY_DELEGATE_SOURCE} failed:\n{done.stderr}")
    return built


# --- ground truth: the plain interpreter ---------------------------------------------------


@functools.cache
def plain_interpreter(model: Path):
    """The runtime itself, with nothing of ours in between (one per model file; the tests call it in turn)."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(model))
    interpreter.allocate_tensors()
    return interpreter


def tflite_file(model_dir: Path) -> Path:
    (model,) = model_dir.glob("*.tflite")
    return model


def plain_outputs(model_dir: Path, tensor: np.ndarray) -> dict[str, np.ndarray]:
    interpreter = plain_interpreter(tflite_file(model_dir))
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], tensor)
    interpreter.invoke()
    return {d["name"]: interpreter.get_tensor(d["index"]) for d in interpreter.get_output_details()}


def plain_image_tensor(model_dir: Path, image: str, scale: float | None = None) -> np.ndarray:
    """Independent preprocessing for ground truth: OpenCV decode, RGB, bilinear resize; uint8 as is,
    float32 scaled by `scale`."""
    import cv2

    return plain_pixels_tensor(model_dir, cv2.imread(str(IMAGES / image)), scale)


def plain_pixels_tensor(model_dir: Path, bgr: np.ndarray, scale: float | None = None) -> np.ndarray:
    """plain_image_tensor's preprocessing of pixels already decoded (OpenCV's BGR)."""
    import cv2

    detail = plain_interpreter(tflite_file(model_dir)).get_input_details()[0]
    _, h, w, _ = detail["shape"]
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    pixels = cv2.resize(rgb, (int(w), int(h)), interpolation=cv2.INTER_LINEAR)[np.newaxis]
    return pixels.astype(np.float32) * scale if scale else pixels.astype(detail["dtype"])


def labels(model_dir: Path) -> list[str]:
    return (model_dir / "labels.txt").read_text().splitlines()
