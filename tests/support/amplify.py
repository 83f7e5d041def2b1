"""Small requests that ask for much more work than they weigh, and `measured`: what one costs the server
(status, seconds, peak PSS growth of the process tree, and how long a normal prediction sent meanwhile
waited). bench/amplify.py prints the table of docs/security.md with them.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections.abc import Callable
from typing import Any

from tests.support.harness import Microservice
from tests.support.hostile import normal_body, predict
from tests.support.memory import PeakPss
from tests.support.paths import image_bytes
from tests.support.payloads import b64, s3_record
from tests.support.services import S3Server

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


def measured(server: Microservice, name: str, send: Callable[[], tuple[Any, int]]) -> dict[str, Any]:
    """Run `send` (-> status, response bytes) with the tree's PSS sampled and a bystander beside it."""
    with PeakPss(server.pid) as memory, Bystander(server.http_port) as bystander:
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
    return {"name": "input", "datatype": "BYTES", "shape": [1], "data": [{"b64": b64(image_bytes("parrot.jpg"))}]}


def repeated_outputs(count: int, classification: int) -> bytes:
    params = {"classification": classification} if classification else {}
    outputs = [{"name": OUTPUT, "parameters": params} for _ in range(count)]
    return json.dumps({"inputs": [image_input()], "outputs": outputs}).encode()


def grpc_call(server: Microservice, method: str, request: bytes, timeout: float = 300) -> tuple[Any, int]:
    """(status name, response bytes) of one call with an already serialized request (the client's own
    pure-Python serializing stays out of the time); `method` is "package.Service/Method", or the Open Inference
    Protocol service's method alone."""
    import grpc

    channel = grpc.insecure_channel(
        f"127.0.0.1:{server.grpc_port}",
        options=[("grpc.max_send_message_length", GRPC_MESSAGE), ("grpc.max_receive_message_length", GRPC_MESSAGE)],
    )
    path = method if "/" in method else f"inference.GRPCInferenceService/{method}"
    call = channel.unary_unary(f"/{path}", request_serializer=lambda data: data, response_deserializer=bytes)
    try:
        reply = call(request, timeout=timeout)
        return "OK", len(reply)
    except grpc.RpcError as e:
        return e.code().name, 0
    finally:
        channel.close()


def grpc_repeated_outputs(count: int, classification: int) -> bytes:
    from open_inference.grpc import protocol as pb

    request = pb.ModelInferRequest(model_name=MODEL_NAME)
    tensor = request.inputs.add(name="input", datatype="BYTES", shape=[1])
    tensor.contents.bytes_contents.append(image_bytes("parrot.jpg"))
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


def v1_grpc_ndarray(size: int) -> bytes:
    """A SeldonMessage of about `size` bytes whose data.ndarray holds zeros (each a google.protobuf.Value)."""
    from google.protobuf import struct_pb2

    value = struct_pb2.Value(number_value=0.0).SerializeToString()
    item = _length_delimited(1, value)  # ListValue.values
    values = item * (size // len(item))
    return _length_delimited(3, _length_delimited(3, values))  # SeldonMessage.data, DefaultData.ndarray


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


def image_store(s3: S3Server) -> S3Server:
    """BUCKET holding cam/parrot.jpg, for image_store=s3://BUCKET/cam/."""
    s3.put(BUCKET, {"cam/parrot.jpg": image_bytes("parrot.jpg")})
    return s3


def notification(records: int, missing_last: bool = False) -> bytes:
    """A bucket notification of `records` images in BUCKET, the last one missing if asked."""
    keys = ["cam/parrot.jpg"] * records
    if missing_last:
        keys[-1] = "cam/missing.jpg"
    return json.dumps({"Records": [s3_record(BUCKET, k) for k in keys]}).encode()
