"""Test harness: the real `seldon-core-microservice` on free loopback ports, REST and gRPC clients,
and the plain TFLite interpreter as ground truth."""

from __future__ import annotations

import base64
import os
import subprocess
import time
from pathlib import Path
from typing import Any, Iterator

import grpc
import numpy as np
import pytest
import requests
from seldon_core.proto import prediction_pb2, prediction_pb2_grpc

from bench.launcher import free_port, microservice_command, parameters, stop_process_group

pytest_plugins = ("services",)  # the shared fixtures web (HTTP server) and s3_server (moto S3)

ROOT = Path(__file__).resolve().parent.parent
MODELS = ROOT / "models"
IMAGES = ROOT / "images"

MOBILENET_V2 = MODELS / "mobilenet_v2_quant"
MOBILENET_V1 = MODELS / "mobilenet_v1_025_quant"
FACE_MASK = MODELS / "face_mask"
DEEPLAB = MODELS / "deeplabv3"


def image_bytes(name: str) -> bytes:
    return (IMAGES / name).read_bytes()


class ModelServer:
    """One real `seldon-core-microservice` process (REST + gRPC + metrics) on free loopback ports."""

    def __init__(self, server_class: str, env: dict[str, str] | None = None, **params: Any):
        self.server_class = server_class
        self.http_port, self.grpc_port, self.metrics_port = free_port(), free_port(), free_port()
        self.env = {
            **os.environ,
            "PREDICTIVE_UNIT_PARAMETERS": parameters(params),
            "PREDICTIVE_UNIT_METRICS_ENDPOINT": "/prometheus",
            "PYTHONPATH": str(ROOT / "tests" / "loopback"),  # REST and metrics listen on 127.0.0.1 only
            **(env or {}),
        }
        self.proc: subprocess.Popen | None = None
        self.url = f"http://127.0.0.1:{self.http_port}"

    def command(self) -> list[str]:
        return microservice_command(self.server_class, self.http_port, self.grpc_port, self.metrics_port)

    def start(self, timeout: float = 90.0) -> "ModelServer":
        self.proc = subprocess.Popen(
            self.command(), cwd=ROOT, env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}: {self.proc.stderr.read().decode()[-3000:]}")
            if self._ready():
                return self
            time.sleep(0.2)
        self.stop()
        raise TimeoutError(f"{self.server_class} not ready after {timeout}s")

    def _ready(self) -> bool:
        try:
            if requests.get(self.url + "/health/ping", timeout=1).status_code != 200:
                return False
            grpc.channel_ready_future(self.channel()).result(timeout=1)
            return True
        except (requests.RequestException, grpc.FutureTimeoutError):
            return False

    def channel(self) -> grpc.Channel:
        if not hasattr(self, "_channel"):
            self._channel = grpc.insecure_channel(
                f"127.0.0.1:{self.grpc_port}",
                options=[("grpc.max_receive_message_length", 64 << 20), ("grpc.max_send_message_length", 64 << 20)],
            )
        return self._channel

    def stop(self) -> None:
        if hasattr(self, "_channel"):
            self._channel.close()
        if self.proc:
            stop_process_group(self.proc, timeout=20)
        if self.proc and self.proc.stderr:
            self.proc.stderr.close()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    # --- clients ---------------------------------------------------------------------------

    def rest(self, body: Any = None, **kwargs: Any) -> requests.Response:
        if body is not None:
            kwargs["json"] = body
        return requests.post(self.url + "/api/v1.0/predictions", timeout=60, **kwargs)

    def rest_ok(self, body: Any = None, **kwargs: Any) -> dict:
        response = self.rest(body, **kwargs)
        assert response.status_code == 200, response.text
        return response.json()

    def grpc(self, message: prediction_pb2.SeldonMessage) -> prediction_pb2.SeldonMessage:
        return prediction_pb2_grpc.ModelStub(self.channel()).Predict(message, timeout=60)

    def image(self, name: str) -> dict:
        """A JPEG/PNG/BMP from images/ as JSON binData."""
        return self.rest_ok({"binData": base64.b64encode(image_bytes(name)).decode()})


@pytest.fixture(scope="session")
def start_server() -> Iterator[Any]:
    """Start servers that live for the session: start_server("TFLiteServer", model_uri=...)."""
    started: list[ModelServer] = []

    def start(server_class: str, env: dict[str, str] | None = None, **params: Any) -> ModelServer:
        server = ModelServer(server_class, env, **params).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope="session")
def mobilenet(start_server) -> ModelServer:
    """The demo model with nothing but model_uri: classification is the default."""
    return start_server("TFLiteServer", model_uri=str(MOBILENET_V2))


@pytest.fixture(scope="session")
def face_mask(start_server) -> ModelServer:
    return start_server("TFLiteServer", model_uri=str(FACE_MASK), postprocess="detection")


# --- ground truth: the plain interpreter ---------------------------------------------------


def plain_interpreter(model: Path):
    """The runtime itself, with nothing of ours in between."""
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

    detail = plain_interpreter(tflite_file(model_dir)).get_input_details()[0]
    _, h, w, _ = detail["shape"]
    rgb = cv2.cvtColor(cv2.imread(str(IMAGES / image)), cv2.COLOR_BGR2RGB)
    pixels = cv2.resize(rgb, (int(w), int(h)), interpolation=cv2.INTER_LINEAR)[np.newaxis]
    return pixels.astype(np.float32) * scale if scale else pixels.astype(detail["dtype"])


def labels(model_dir: Path) -> list[str]:
    return (model_dir / "labels.txt").read_text().splitlines()
