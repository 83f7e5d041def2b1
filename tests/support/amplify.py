"""Small requests that ask for much more work than they weigh, and what each costs the server: status,
seconds, peak PSS growth of the process tree, and how long a normal prediction sent meanwhile waited.

    .venv/bin/python -m bench.amplify            # the table, with the chart's settings
    .venv/bin/python -m bench.amplify ROOT       # the same clients against another checkout (e.g. before a change)

The servers run with the chart's settings (one REST worker, one thread; GRPC_WORKERS=1 where gRPC is
used) and a real S3 (moto) for images by reference and uncertain uploads. Every case is bounded in
time; traffic stays on 127.0.0.1. docs/security.md holds the table this prints.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from bench.hostile import CHART_ENV, PeakPss, normal_body, predict, raw_request
from bench.launcher import ROOT, Server

MODEL = "mobilenet_v2_quant"
MODEL_NAME = "mobilenet_v2_1.0_224_quant"
OUTPUT = "MobilenetV2/Predictions/Softmax"
BUCKET = "amplify"
GRPC_MESSAGE = 64 << 20


# --- a normal client beside the hostile one ------------------------------------------------------------


class Bystander:
    """One normal prediction sent `delay` s after the hostile request starts: how long it waited."""

    def __init__(self, port: int, delay: float = 0.5):
        self.port, self.delay = port, delay
        self.result: tuple[int | None, float, str] | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        time.sleep(self.delay)
        self.result = predict(self.port, normal_body(), timeout=300)

    def __enter__(self) -> Bystander:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._thread.join(310)

    @property
    def wait_s(self) -> float | None:
        return None if self.result is None else round(self.result[1], 2)


def measured(server: Server, name: str, send: Callable[[], tuple[Any, int]]) -> dict[str, Any]:
    """Run `send` (-> status, response bytes) with the tree's PSS sampled and a bystander beside it."""
    assert server.proc is not None
    with PeakPss(server.proc.pid) as memory, Bystander(server.http_port) as bystander:
        start = time.monotonic()
        status, size = send()
        seconds = time.monotonic() - start
    return {
        "case": name,
        "status": status,
        "s": round(seconds, 2),
        "response_bytes": size,
        "pss_growth_mb": memory.growth,
        "bystander_wait_s": bystander.wait_s,
    }


# --- clients ------------------------------------------------------------------------------------------------


def post(
    port: int, path: str, body: bytes, headers: dict[str, str] | None = None, timeout: float = 300
) -> tuple[Any, int]:
    """(status, response bytes) of one POST; the status is the error's name when the connection failed."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("POST", path, body, {"Content-Type": "application/json", **(headers or {})})
        response = conn.getresponse()
        return response.status, len(response.read())
    except (OSError, http.client.HTTPException) as e:
        return type(e).__name__, 0
    finally:
        conn.close()


def infer_path() -> str:
    return f"/v2/models/{MODEL_NAME}/infer"


def image_input() -> dict[str, Any]:
    jpeg = (ROOT / "images" / "parrot.jpg").read_bytes()
    return {"name": "input", "datatype": "BYTES", "shape": [1], "data": [{"b64": base64.b64encode(jpeg).decode()}]}


def repeated_outputs(count: int, classification: int) -> bytes:
    params = {"classification": classification} if classification else {}
    outputs = [{"name": OUTPUT, "parameters": params} for _ in range(count)]
    return json.dumps({"inputs": [image_input()], "outputs": outputs}).encode()


def grpc_call(server: Server, method: str, request: bytes, timeout: float = 300) -> tuple[Any, int]:
    """(status name, response bytes) of one call with an already serialized request (the client's own
    pure-Python serializing stays out of the time)."""
    import grpc
    from open_inference.grpc import protocol as pb

    channel = grpc.insecure_channel(
        f"127.0.0.1:{server.grpc_port}",
        options=[("grpc.max_send_message_length", GRPC_MESSAGE), ("grpc.max_receive_message_length", GRPC_MESSAGE)],
    )
    call = channel.unary_unary(
        f"/inference.GRPCInferenceService/{method}",
        request_serializer=lambda data: data,
        response_deserializer=pb.ModelInferResponse.FromString,
    )
    try:
        reply = call(request, timeout=timeout)
        return "OK", reply.ByteSize()
    except grpc.RpcError as e:
        return e.code().name, 0
    finally:
        channel.close()


def grpc_repeated_outputs(count: int, classification: int) -> bytes:
    from open_inference.grpc import protocol as pb

    request = pb.ModelInferRequest(model_name=MODEL_NAME)
    tensor = request.inputs.add(name="input", datatype="BYTES", shape=[1])
    tensor.contents.bytes_contents.append((ROOT / "images" / "parrot.jpg").read_bytes())
    for _ in range(count):
        out = request.outputs.add(name=OUTPUT)
        out.parameters["classification"].int64_param = classification
    return request.SerializeToString()


def grpc_typed_contents(field: str, size: int) -> bytes:
    """A ModelInferRequest of about `size` bytes whose one input holds `field` values: zeros (one byte each as
    varints, four as floats) or empty strings (two bytes each). Written straight in the wire format (pure
    Python protobuf would take seconds to build it): the tensor without contents, then its contents field."""
    from open_inference.grpc import protocol as pb

    number = pb.InferTensorContents.DESCRIPTOR.fields_by_name[field].number
    datatype = {"uint_contents": "UINT32", "fp32_contents": "FP32", "bytes_contents": "BYTES"}[field]
    if field == "bytes_contents":  # repeated bytes: one record per element
        count = size // 2
        contents = (_tag(number, 2) + b"\x00") * count  # tag, length 0
    else:  # packed: one record
        count = size // (4 if field == "fp32_contents" else 1)
        contents = _length_delimited(number, bytes(size))
    tensor = pb.ModelInferRequest.InferInputTensor(name="input", datatype=datatype, shape=[count]).SerializeToString()
    tensor += _length_delimited(5, contents)  # InferInputTensor.contents
    return pb.ModelInferRequest(model_name=MODEL_NAME).SerializeToString() + _length_delimited(5, tensor)  # .inputs


def _varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _tag(number: int, wire_type: int) -> bytes:
    return _varint(number << 3 | wire_type)


def _length_delimited(number: int, payload: bytes) -> bytes:
    return _tag(number, 2) + _varint(len(payload)) + payload


def header_bypass_numbers(size: int) -> tuple[bytes, dict[str, str]]:
    """A JSON body of numbers announced as a binary-extension header of its whole length."""
    head = b'{"inputs": [{"name": "input", "datatype": "UINT8", "shape": [1, 224, 224, 3], "data": ['
    body = head + b"0," * ((size - len(head)) // 2) + b"0]}]}"
    return body, {"Inference-Header-Content-Length": str(len(body))}


def header_bypass_inputs(count: int) -> tuple[bytes, dict[str, str]]:
    entry = b'{"name":"i","datatype":"UINT8","shape":[1],"data":[0]},'
    body = b'{"inputs": [' + entry * count + b'{"name":"input","datatype":"UINT8","shape":[1],"data":[0]}]}'
    return body, {"Inference-Header-Content-Length": str(len(body))}


# --- S3 --------------------------------------------------------------------------------------------------


@contextmanager
def s3() -> Iterator[Any]:
    """A moto S3 server on loopback with the bucket of images (tests/services.py's)."""
    from services import start_s3

    store = start_s3()
    try:
        store.put(BUCKET, {"cam/parrot.jpg": (ROOT / "images" / "parrot.jpg").read_bytes()})
        store.put("retraining", {})
        yield store
    finally:
        store.server.stop()


def notification(records: int, missing_last: bool = False) -> bytes:
    def record(key: str) -> dict[str, Any]:
        return {"eventName": "ObjectCreated:Put", "s3": {"bucket": {"name": BUCKET}, "object": {"key": key}}}

    keys = ["cam/parrot.jpg"] * records
    if missing_last:
        keys[-1] = "cam/missing.jpg"
    return json.dumps({"Records": [record(k) for k in keys]}).encode()


def frames_uploaded(store: Any) -> int:
    """Uncertain images uploaded under a request_id frame-N."""
    listed = store.client.list_objects_v2(Bucket="retraining").get("Contents", [])
    return sum(1 for o in listed if "-frame-" in o["Key"] and not o["Key"].endswith(".json"))


def black_hole() -> tuple[socket.socket, int]:
    """A port that accepts connections and never answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    return listener, listener.getsockname()[1]


# --- servers ---------------------------------------------------------------------------------------------


def start(env: dict[str, str] | None = None, grpc: bool = False, **params: Any) -> Server:
    body = normal_body()
    server = Server(
        "TFLiteServer",
        {"model_uri": str(ROOT / "models" / MODEL), **params},
        env={**CHART_ENV, **({"GRPC_WORKERS": "1"} if grpc else {}), **(env or {})},
    )
    return server.start(lambda s: predict(s.http_port, body, 5)[0] == 200)


def sigterm_exit(server: Server, before: Callable[[], None] = lambda: None) -> dict[str, Any]:
    """SIGTERM to the process group (as the kubelet's runtime sends it): exit code and seconds to exit."""
    assert server.proc is not None
    before()
    start = time.monotonic()
    os.killpg(server.proc.pid, signal.SIGTERM)
    try:
        code = server.proc.wait(60)
    except Exception:
        code = "still running after 60 s"
    return {"exit": code, "s": round(time.monotonic() - start, 2)}


def no_host_request(port: int) -> Any:
    reply = raw_request(port, b"GET /health/ping HTTP/1.1\r\n\r\n", [], timeout=5)
    return reply.status if reply.status is not None else reply.error or "no answer"


# --- the table ----------------------------------------------------------------------------------------


def table() -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    with s3() as store:
        env = store.env
        server = start(env, grpc=True, image_store=f"s3://{BUCKET}/cam/")
        try:
            port = server.http_port
            rows.append(
                measured(
                    server,
                    "1. OIP REST: the output 10,000 times, classification 1001",
                    lambda: post(port, infer_path(), repeated_outputs(10_000, 1001)),
                )
            )
            rows.append(
                measured(
                    server,
                    "1. OIP gRPC: the output 2,000 times, classification 1001",
                    lambda: grpc_call(server, "ModelInfer", grpc_repeated_outputs(2_000, 1001)),
                )
            )
            rows.append(
                measured(
                    server,
                    "2. S3 notification: 2,000 records",
                    lambda: post(port, "/api/v1.0/predictions", notification(2_000)),
                )
            )
            rows.append(
                measured(
                    server,
                    "2. S3 notification: 300 records, the last missing",
                    lambda: post(port, "/api/v1.0/predictions", notification(300, missing_last=True)),
                )
            )
            for name, (body, headers) in (
                (
                    "4. OIP REST: 16 MB of numbers, with Inference-Header-Content-Length",
                    header_bypass_numbers((16 << 20) - 4096),
                ),
                ("4. OIP REST: 250,000 inputs, with Inference-Header-Content-Length", header_bypass_inputs(250_000)),
            ):
                rows.append(measured(server, name, lambda b=body, h=headers: post(port, infer_path(), b, h)))
            for field in ("uint_contents", "bytes_contents", "fp32_contents"):
                request = grpc_typed_contents(field, 16_000_000)
                rows.append(
                    measured(
                        server,
                        f"5. OIP gRPC: 16 MB of {field}",
                        lambda r=request: grpc_call(server, "ModelInfer", r),
                    )
                )
            hole, hole_port = black_hole()
            try:
                hanging = start(
                    {**env, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{hole_port}"}, image_store=f"s3://{BUCKET}/cam/"
                )
                try:
                    body = json.dumps({"jsonData": {"image_uri": f"s3://{BUCKET}/cam/parrot.jpg"}}).encode()
                    rows.append(
                        measured(
                            hanging,
                            "minor: image_uri with an S3 endpoint that accepts and never answers",
                            lambda: post(hanging.http_port, "/api/v1.0/predictions", body),
                        )
                    )
                finally:
                    hanging.stop()
            finally:
                hole.close()
        finally:
            server.stop()

        server = start(env, uncertain_store="s3://retraining/", confidence_threshold=1.0)
        try:
            body = json.loads(normal_body())
            poison = {**body, "meta": {"tags": {"request_id": "x" * 100_000}}}
            status = post(server.http_port, "/api/v1.0/predictions", json.dumps(poison).encode())[0]
            for i in range(40):
                frame = {**body, "meta": {"tags": {"request_id": f"frame-{i}"}}}
                post(server.http_port, "/api/v1.0/predictions", json.dumps(frame).encode())
            deadline = time.monotonic() + 30
            while frames_uploaded(store) < 40 and time.monotonic() < deadline:
                time.sleep(0.5)
            rows.append(
                {
                    "case": "3. a 100 KB request_id, then 40 uncertain predictions",
                    "status": status,
                    "uploaded_of_40_within_30s": frames_uploaded(store),
                }
            )
        finally:
            server.stop()

    server = start()
    rows.append(
        {
            "case": "6. a request without Host, then SIGTERM",
            "status": no_host_request(server.http_port),
            **sigterm_exit(server),
        }
    )
    server.stop()
    server = start(grpc=True)
    rows.append({"case": "7. SIGTERM with GRPC_WORKERS=1", **sigterm_exit(server)})
    server.stop()
    return rows


if __name__ == "__main__":
    if len(sys.argv) > 1:  # another checkout's root (e.g. the unmodified code): measure it with this harness
        from bench.launcher import use_checkout

        use_checkout(sys.argv[1])
    for row in table():
        print(json.dumps(row), flush=True)
