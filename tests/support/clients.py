"""The servers as the tests talk to them: end to end (`ModelServer`, the real `seldon-core-microservice`
started through the harness) or in-process (`InProcessServer`, the component inside Seldon's own Flask app
and gRPC servicer), both with the same clients; and the one line a server that cannot load writes."""

from __future__ import annotations

import base64
import importlib
import io
import json
import subprocess
from pathlib import Path
from typing import Any

import grpc
import pytest
import requests
from seldon_core.proto import prediction_pb2, prediction_pb2_grpc

from tests.support.harness import Microservice, parameters
from tests.support.paths import ROOT, image_bytes


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


def build_component(server_class: str, params: dict[str, Any]) -> Any:
    """`server_class(**parameters)` as the wrapper calls it: PREDICTIVE_UNIT_PARAMETERS parsed by Seldon."""
    from seldon_core.microservice import parse_parameters

    cls = getattr(importlib.import_module(server_class), server_class)
    return cls(**parse_parameters(json.loads(parameters(params))))


# --- a server that cannot load: one line, no traceback --------------------------------------------------


def our_line(server_class: str, stderr: str) -> str:
    """The one line a server that cannot load its model writes (and no traceback anywhere)."""
    ours = [line for line in stderr.splitlines() if line.startswith(f"{server_class}: cannot load model:")]
    assert len(ours) == 1, stderr[-3000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    return ours[0]


def corrupt_ir(directory: Path) -> None:
    """An OpenVINO IR in `directory` that OpenVINO cannot read."""
    (directory / "model.xml").write_text("<net name='broken'><layers>")
    (directory / "model.bin").write_bytes(b"\x00" * 16)


def run_to_exit(server: ModelServer) -> str:
    """Run the real microservice; it must exit non-zero by itself. Returns its stderr."""
    proc = subprocess.run(server.command(), cwd=ROOT, env=server.env, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0, proc.stderr[-2000:]
    return proc.stderr


def start_and_fail(server_class: str, **params: Any) -> str:
    """Run the real microservice; it must exit non-zero by itself. Returns its one line."""
    return our_line(server_class, run_to_exit(ModelServer(server_class, **params)))


def fail_in_process(server_class: str, capsys: pytest.CaptureFixture[str], **params: Any) -> str:
    """Build the server in-process; it must exit non-zero having written the one line."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as stopped:
        build_component(server_class, params)
    assert stopped.value.code != 0
    return our_line(server_class, capsys.readouterr().err)
