"""Payloads, the cheapest clients we can write, and a bounded closed-loop load generator.

The client should cost as little as possible, since it shares the machine's cores with the server:
requests are encoded once (JSON bodies as bytes, gRPC messages serialized once and sent as raw
bytes through a channel with no (de)serializer), and responses are read in full but only their
status is checked in the loop; one response per case is parsed and checked for its content.
"""

from __future__ import annotations

import itertools
import json
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
import numpy as np
from seldon_core.proto import prediction_pb2

from edgeservers.datatypes import name_of
from edgeservers.protocols.v1.codecs import tensor_from_tf, tensor_to_tf

PREDICT_METHOD = "/seldon.protos.Model/Predict"
JSON_HEADERS = {"Content-Type": "application/json"}
OIP_INFER_METHOD = "/inference.GRPCInferenceService/ModelInfer"
OIP_HEADER = "Inference-Header-Content-Length"
GRPC_OPTIONS = [("grpc.max_receive_message_length", 64 << 20), ("grpc.max_send_message_length", 64 << 20)]


# --- requests ---------------------------------------------------------------------------------


def rest_ndarray(tensor: np.ndarray) -> bytes:
    return json.dumps({"data": {"ndarray": tensor.tolist()}}).encode()


def grpc_image(jpeg: bytes) -> bytes:
    return prediction_pb2.SeldonMessage(binData=jpeg).SerializeToString()


def grpc_tftensor(tensor: np.ndarray) -> bytes:
    message = prediction_pb2.SeldonMessage()
    message.data.tftensor.CopyFrom(tensor_to_tf(tensor))
    return message.SerializeToString()


def grpc_tensor(tensor: np.ndarray) -> bytes:
    message = prediction_pb2.SeldonMessage()
    message.data.tensor.shape.extend(tensor.shape)
    message.data.tensor.values.extend(tensor.ravel().astype(np.float64).tolist())
    return message.SerializeToString()


def rest_tftensor(tensor: np.ndarray) -> bytes:
    from google.protobuf import json_format

    return json.dumps({"data": {"tftensor": json_format.MessageToDict(tensor_to_tf(tensor))}}).encode()


def oip_rest_binary(
    tensor: np.ndarray, input_name: str, outputs: list[str] | None = None
) -> tuple[bytes, dict[str, str]]:
    """An OIP REST infer body with the binary tensor data extension (input and outputs binary), and its headers;
    `outputs` selects outputs (default: the server's)."""
    raw = np.ascontiguousarray(tensor).tobytes()
    doc: dict[str, Any] = {
        "inputs": [
            {
                "name": input_name,
                "datatype": name_of(tensor.dtype),
                "shape": list(tensor.shape),
                "parameters": {"binary_data_size": len(raw)},
            }
        ],
        "parameters": {"binary_data_output": True},
    }
    if outputs:
        doc["outputs"] = [{"name": name} for name in outputs]
    header = json.dumps(doc).encode()
    return header + raw, {OIP_HEADER: str(len(header)), "Content-Type": "application/octet-stream"}


def oip_grpc(tensor: np.ndarray, model_name: str, input_name: str, outputs: list[str] | None = None) -> bytes:
    """An OIP ModelInferRequest with the tensor in raw_input_contents."""
    from open_inference.grpc import protocol

    request = protocol.ModelInferRequest(model_name=model_name)
    for name in outputs or []:
        request.outputs.add(name=name)
    request.inputs.add(name=input_name, datatype=name_of(tensor.dtype), shape=list(tensor.shape))
    request.raw_input_contents.append(np.ascontiguousarray(tensor).tobytes())
    return request.SerializeToString()


# --- what a correct answer looks like ----------------------------------------------------------


def check_rest(body: bytes) -> str:
    """A short description of a REST answer, or an AssertionError if it is not a prediction."""
    answer = json.loads(body)
    if "jsonData" in answer:
        data = answer["jsonData"]
        if isinstance(data, list):
            assert data and isinstance(data[0], dict), answer
            return f"jsonData list of {len(data)} ({data[0].get('label')!r} first)"
        assert isinstance(data, dict) and data, answer
        return "jsonData {" + ", ".join(f"{k}: {np.asarray(v).shape}" for k, v in data.items()) + "}"
    assert "data" in answer and ("ndarray" in answer["data"] or "tftensor" in answer["data"]), str(answer)[:500]
    if "tftensor" in answer["data"]:
        return f"tftensor {[int(d['size']) for d in answer['data']['tftensor']['tensorShape']['dim']]}"
    return f"ndarray {np.asarray(answer['data']['ndarray']).shape}"


def check_grpc(raw: bytes) -> str:
    message = prediction_pb2.SeldonMessage.FromString(raw)
    which = message.WhichOneof("data_oneof")
    if which == "data":
        form = message.data.WhichOneof("data_oneof")
        if form == "tftensor":
            return f"tftensor {tensor_from_tf(message.data.tftensor).shape}"
        if form == "tensor":
            return f"tensor {list(message.data.tensor.shape)}"
        return f"data.{form}"
    assert which == "jsonData", message
    return f"jsonData ({message.jsonData.WhichOneof('kind')})"


def check_oip_rest(body: bytes) -> str:
    """An OIP REST answer (its JSON header, then the binary outputs)."""
    header, _ = json.JSONDecoder().raw_decode(body.decode("latin-1"))
    assert "outputs" in header and header["outputs"], str(header)[:500]
    return "OIP outputs " + ", ".join(f"{o['name']} {o['datatype']} {o['shape']}" for o in header["outputs"])


def check_oip_grpc(raw: bytes) -> str:
    from open_inference.grpc import protocol

    reply = protocol.ModelInferResponse.FromString(raw)
    assert reply.outputs and len(reply.raw_output_contents) == len(reply.outputs), reply
    return "OIP outputs " + ", ".join(f"{o.name} {o.datatype} {list(o.shape)}" for o in reply.outputs)


# --- clients: one per load thread ---------------------------------------------------------------


class RestClient:
    """POST a pre-encoded request over one keep-alive connection (re-opened when the server closes it).

    The request (request line, headers and body) is built once and sent with one sendall; the answer
    is read by its Content-Length, which the servers always send. http.client would copy the body
    into a new message for every request and parse each answer's headers with email.parser, CPU taken from
    the cores the server runs on.
    """

    def __init__(
        self, port: int, body: bytes, path: str = "/api/v1.0/predictions", headers: dict[str, str] | None = None
    ):
        self._address = ("127.0.0.1", port)
        fields = {"Host": f"127.0.0.1:{port}", "Content-Length": str(len(body)), **(headers or JSON_HEADERS)}
        head = f"POST {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in fields.items()) + "\r\n"
        self._request = head.encode() + body
        self._sock: socket.socket | None = None
        self._pending = b""

    def __call__(self) -> tuple[bool, bytes]:
        try:
            if self._sock is None:
                self._sock = socket.create_connection(self._address, timeout=120)
                self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._sock.sendall(self._request)
            status, length, close = self._head()
            data = self._take(length)
            if close:
                self.close()
            return status == 200, data
        except (OSError, ValueError, IndexError):
            self.close()
            return False, b""

    def _head(self) -> tuple[int, int, bool]:
        """Status, Content-Length and whether the server closes the connection, from the answer's head."""
        while b"\r\n\r\n" not in self._pending:
            self._receive()
        head, self._pending = self._pending.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        fields = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        return int(lines[0].split()[1]), int(fields["content-length"]), fields.get("connection", "").lower() == "close"

    def _take(self, length: int) -> bytes:
        while len(self._pending) < length:
            self._receive()
        data, self._pending = self._pending[:length], self._pending[length:]
        return data

    def _receive(self) -> None:
        assert self._sock is not None
        chunk = self._sock.recv(1 << 20)
        if not chunk:
            raise ConnectionResetError("the server closed the connection")
        self._pending += chunk

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
        self._sock, self._pending = None, b""


class GrpcClient:
    """Predict with a pre-serialized SeldonMessage, over one channel per load thread."""

    def __init__(self, port: int, message: bytes, method: str = PREDICT_METHOD):
        self._channel = grpc.insecure_channel(f"127.0.0.1:{port}", options=GRPC_OPTIONS)
        self._predict = self._channel.unary_unary(method)  # bytes in, bytes out
        self._message = message

    def __call__(self) -> tuple[bool, bytes]:
        try:
            return True, self._predict(self._message, timeout=120)
        except grpc.RpcError:
            return False, b""

    def close(self) -> None:
        self._channel.close()


# --- the load ---------------------------------------------------------------------------------


@dataclass
class Run:
    concurrency: int
    latencies_s: list[float] = field(default_factory=list)
    errors: int = 0
    elapsed_s: float = 0.0

    def summary(self) -> dict[str, Any]:
        ms = np.asarray(self.latencies_s) * 1000.0
        out: dict[str, Any] = {
            "concurrency": self.concurrency,
            "requests": len(self.latencies_s) + self.errors,
            "errors": self.errors,
            "elapsed_s": round(self.elapsed_s, 3),
            "throughput_rps": round(len(self.latencies_s) / self.elapsed_s, 2) if self.elapsed_s else 0.0,
        }
        if ms.size:
            for q in (50, 90, 99):
                out[f"p{q}_ms"] = round(float(np.percentile(ms, q)), 2)
            out["mean_ms"] = round(float(ms.mean()), 2)
        return out


def drive(make_client: Callable[[], Any], concurrency: int, requests: int, time_cap_s: float, warmup: int = 2) -> Run:
    """`requests` calls (fewer if `time_cap_s` runs out) from `concurrency` closed-loop threads.

    Each thread has its own client and first makes `warmup` unmeasured calls; the clock starts when
    every thread is warm.
    """
    run = Run(concurrency)
    counter = itertools.count()
    lock = threading.Lock()
    start_at: list[float] = []
    ready = threading.Barrier(concurrency + 1, action=lambda: start_at.append(time.perf_counter()))

    def worker() -> None:
        client = make_client()
        try:
            for _ in range(warmup):
                client()
            ready.wait()
            deadline = start_at[0] + time_cap_s
            while next(counter) < requests and time.perf_counter() < deadline:
                t0 = time.perf_counter()
                ok, _ = client()
                dt = time.perf_counter() - t0
                with lock:
                    if ok:
                        run.latencies_s.append(dt)
                    else:
                        run.errors += 1
        finally:
            client.close()

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(concurrency)]
    for t in threads:
        t.start()
    ready.wait()
    for t in threads:
        t.join(time_cap_s + 180)
    run.elapsed_s = time.perf_counter() - start_at[0]
    return run
