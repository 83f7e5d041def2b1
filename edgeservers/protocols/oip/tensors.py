"""The Open Inference Protocol (OIP, "V2"; KServe, Triton, OpenVINO Model Server, MLServer) beside Seldon's v1.

Same model, same pool, same pre- and post-processing: a request decodes to a `codecs.Payload` and goes
through `EdgeModelServer.predict_payload`, like a v1 request; only the wire format differs.

- REST: a Flask blueprint with `/v2`, `/v2/health/{live,ready}`, `/v2/models/{name}[/versions/{v}]`,
  `.../ready`, `.../infer` on Seldon's REST app (JSON tensors, and Triton's binary tensor data
  extension: a JSON header of `Inference-Header-Content-Length` bytes, then the raw tensors).
- gRPC: `inference.GRPCInferenceService` (stubs generated from the OIP proto, package
  `open-inference-grpc`) on Seldon's gRPC server; tensors come and go as raw bytes.

Inputs: the model's named tensors with their OIP datatype, or one `BYTES` tensor of shape `[1]` holding
an encoded JPEG/PNG/BMP (as OpenVINO Model Server takes images), preprocessed like v1's `binData`.
Outputs: the model's tensors by name; `answer`, a BYTES tensor `[1]` holding the post-processing's JSON
(the v1 `jsonData`: labels, detections, regions); and Triton's classification extension: a model
output requested with `parameters.classification = k` comes back as `k` BYTES `"score:index:label"`.
Errors: `{"error": "..."}` with the status the same error gets over Seldon's v1 protocol (400 bad request,
404 unknown model or version, 413 over a limit, ...); over gRPC the code `errors.GRPC_CODES` maps it to,
with the same message.

Limits, checked before the work they bound: a request names each model output at most once, asks for a
classification of at most the output's classes, and the response may hold at most `max_response_bytes`;
JSON (a whole body or the binary extension's header) and gRPC messages may hold at most as many values
as the model's inputs could use (twice their size plus some slack), counted before they are parsed.
"""

from __future__ import annotations

import binascii
import math
import struct
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import grpc
import numpy as np
import orjson
import pybase64
from flask import Blueprint, Response, request
from seldon_core.flask_utils import SeldonMicroserviceException

from . import __version__, codecs, postprocess, protobuf_budget, seldon_compat
from .errors import GRPC_CODES, BadRequest, NotFound, TooLarge
from .http_worker import too_large
from .metrics import PREPROCESS, RequestMetrics
from .runtime import TensorSpec

if TYPE_CHECKING:
    from .server import EdgeModelServer

ANSWER = "answer"  # the extra BYTES output holding the post-processed answer as JSON
SERVER_NAME = "edgeservers"
EXTENSIONS = ("binary_tensor_data", "classification")
HEADER_LENGTH = "Inference-Header-Content-Length"

DTYPES: dict[str, np.dtype] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
    "BYTES": np.dtype(object),
}
# Little-endian on the wire (the binary extension and raw_*_contents), whatever the host.
_WIRE = {name: dtype.newbyteorder("<") for name, dtype in DTYPES.items() if name != "BYTES"}


# --- the protocol-neutral request and response ---------------------------------------------------


@dataclass
class InputTensor:
    name: str
    datatype: str
    shape: list[int]
    value: np.ndarray | list[bytes]  # numbers in the declared datatype, or BYTES elements


@dataclass
class RequestedOutput:
    name: str
    classification: int = 0  # the classification extension: top-k as "score:index:label" strings
    binary: bool | None = None  # REST: the binary tensor data extension for this output


@dataclass
class InferRequest:
    inputs: list[InputTensor]
    outputs: list[RequestedOutput] | None = None  # None: the default outputs
    id: str = ""
    binary_output: bool = False  # REST: parameters.binary_data_output


@dataclass
class OutputTensor:
    name: str
    datatype: str
    shape: list[int]
    value: np.ndarray | list[bytes]
    binary: bool = False


@dataclass
class InferResponse:
    model_name: str
    model_version: str
    id: str
    outputs: list[OutputTensor]
    parameters: dict[str, Any] = field(default_factory=dict)


def _count(shape: Sequence[int]) -> int:
    """Elements of a tensor of `shape`, exactly (Python integers: no overflow, however large the dimensions)."""
    return math.prod(shape)


def _shape(value: Any, where: str) -> list[int]:
    if not isinstance(value, (list, tuple)) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in value
    ):
        raise BadRequest(f"{where}: shape must be a list of non-negative integers, got {value!r}")
    return list(value)


def _datatype(value: Any, where: str) -> str:
    if value not in DTYPES:
        raise BadRequest(f"{where}: datatype {value!r} is not an OIP datatype: expected one of {', '.join(DTYPES)}")
    return value


def bytes_elements(raw: bytes | memoryview, count: int, where: str) -> list[bytes]:
    """BYTES in the binary form: each element a little-endian uint32 length, then that many bytes."""
    elements, offset = [], 0
    while offset < len(raw):
        if offset + 4 > len(raw):
            raise BadRequest(f"{where}: BYTES data ends inside an element's 4-byte length prefix")
        (size,) = struct.unpack_from("<I", raw, offset)
        offset += 4
        if offset + size > len(raw):
            raise BadRequest(f"{where}: BYTES element of {size} bytes, but only {len(raw) - offset} remain")
        elements.append(bytes(raw[offset : offset + size]))
        offset += size
    if len(elements) != count:
        raise BadRequest(f"{where}: {len(elements)} BYTES elements but the shape needs {count}")
    return elements


def bytes_binary(elements: Iterable[bytes]) -> bytes:
    return b"".join(struct.pack("<I", len(e)) + e for e in elements)


def tensor_from_raw(datatype: str, shape: list[int], raw: bytes | memoryview, where: str) -> np.ndarray | list[bytes]:
    """A tensor from its raw little-endian bytes (binary extension, gRPC raw_input_contents)."""
    count = _count(shape)
    if datatype == "BYTES":
        return bytes_elements(raw, count, where)
    dtype = _WIRE[datatype]
    if len(raw) != count * dtype.itemsize:
        raise BadRequest(
            f"{where}: {len(raw)} bytes of data, but shape {shape} of {datatype} needs {count * dtype.itemsize}"
        )
    return np.frombuffer(raw, dtype).astype(DTYPES[datatype], copy=False).reshape(shape)


def tensor_from_values(datatype: str, shape: list[int], values: Any, where: str) -> np.ndarray | list[bytes]:
    """A tensor from typed values (JSON `data`, gRPC `contents`), flat or nested, row-major."""
    count = _count(shape)
    if datatype == "BYTES":
        flat = _flatten(values, len(shape), where)
        elements = []
        for v in flat:
            if isinstance(v, str):
                elements.append(v.encode())
            elif isinstance(v, (bytes, bytearray)):
                elements.append(bytes(v))
            elif isinstance(v, Mapping) and isinstance(v.get("b64"), str):  # TF Serving / OVMS style
                elements.append(_b64(v["b64"], where))
            else:
                raise BadRequest(f'{where}: BYTES data must be strings (or {{"b64": ...}}), got {type(v).__name__}')
        if len(elements) != count:
            raise BadRequest(f"{where}: {len(elements)} values but shape {shape} needs {count}")
        return elements
    array = codecs.numbers(values, f"{where}: data ({datatype})")
    if array.size != count:
        raise BadRequest(f"{where}: {array.size} values but shape {shape} needs {count}")
    spec = TensorSpec(where, DTYPES[datatype], tuple(shape))
    try:
        return codecs.as_input(spec, array.reshape(shape), "data")
    except BadRequest as e:
        raise BadRequest(f"{where}: {e}") from None


def _flatten(values: Any, depth: int, where: str) -> list:
    """Nested lists of BYTES elements, row-major, nested at most `depth` deep (the shape's rank)."""
    out: list = []
    stack = [(values, 0)]
    while stack:
        value, level = stack.pop()
        if not isinstance(value, (list, tuple)):
            out.append(value)
        elif level >= max(depth, 1):
            raise BadRequest(f"{where}: data is nested deeper than its shape's {depth} dimensions")
        else:
            stack.extend((v, level + 1) for v in reversed(value))
    return out


def _b64(text: str, where: str) -> bytes:
    try:
        return pybase64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest(f"{where}: b64 is not valid base64") from None


def output_values(datatype: str, value: np.ndarray | list[bytes]) -> list:
    """An output's values flattened for JSON."""
    if datatype == "BYTES":
        return [e.decode("utf-8", "replace") for e in value]
    array = np.ascontiguousarray(value).reshape(-1)
    if array.dtype == np.float16:  # orjson writes no float16
        array = array.astype(np.float32)
    return array  # type: ignore[return-value]


def output_raw(datatype: str, value: np.ndarray | list[bytes]) -> bytes:
    if datatype == "BYTES":
        return bytes_binary(value)
    return np.ascontiguousarray(value, dtype=_WIRE[datatype]).tobytes()


# --- the model behind the protocol -----------------------------------------------------------------


class OipModel:
    """The component as OIP sees it: its name, version, tensors, and one infer step."""

    def __init__(self, component: EdgeModelServer):
        self.component = component
        settings = component._settings
        self.name = settings.model_name or component.model_name
        self.version = settings.model_version
        self.platform = component.runtime_class.name
        self.inputs: tuple[TensorSpec, ...] = component._signature.inputs
        self.outputs: tuple[TensorSpec, ...] = component._signature.outputs
        self.by_output = {s.name: s for s in self.outputs}
        self.image_input = component._image is not None
        self.has_answer = component._postprocessor is not None
        self.answer_for_tensors = settings.postprocess != "auto"
        self.labels = component._labels
        self.longest_label = max((len(label.encode()) for label in self.labels or ()), default=0)
        self.max_response_bytes = component.max_response_bytes
        self.max_outputs = len(self.outputs) + self.has_answer  # each output at most once

    # --- identity, health, metadata

    def check(self, name: str, version: str = "") -> None:
        if name != self.name:
            raise NotFound(f"unknown model {name!r}: this server serves {self.name!r}")
        if version and version != self.version:
            served = f"version {self.version!r}" if self.version else "no versions (leave the version out)"
            raise NotFound(f"model {name!r} has no version {version!r}: it serves {served}")

    @property
    def ready(self) -> bool:
        return self.component._runtime is not None

    def server_metadata(self) -> dict[str, Any]:
        return {"name": SERVER_NAME, "version": __version__, "extensions": list(EXTENSIONS)}

    def metadata(self) -> dict[str, Any]:
        outputs = [spec.describe() for spec in self.outputs]
        if self.has_answer:
            outputs.append({"name": ANSWER, "datatype": "BYTES", "shape": [1]})
        meta: dict[str, Any] = {
            "name": self.name,
            "versions": [self.version] if self.version else [],
            "platform": self.platform,
            "inputs": [spec.describe() for spec in self.inputs],
            "outputs": outputs,
        }
        return meta

    # --- infer

    def check_outputs(self, requested: Sequence[RequestedOutput]) -> None:
        """Each output named at most once, known, and classified into at most its classes: refused before any work."""
        seen: set[str] = set()
        for out in requested:
            if out.name in seen:
                raise BadRequest(f"output {out.name!r} is requested more than once: name each output at most once")
            seen.add(out.name)
            if out.name == ANSWER:
                if not self.has_answer:
                    raise BadRequest(
                        f"output {ANSWER!r} needs a post-processing; this model has none (postprocess=none)"
                    )
                if out.classification:
                    raise BadRequest(
                        f"classification applies to the model's outputs ({', '.join(self.by_output)}), not {ANSWER!r}"
                    )
                continue
            spec = self.by_output.get(out.name)
            if spec is None:
                raise BadRequest(
                    f"unknown output {out.name!r}; the model's outputs: {', '.join([*self.by_output, *([ANSWER] if self.has_answer else [])])}"
                )
            classes = _classes(spec)
            if out.classification < 0 or (classes is not None and out.classification > classes):
                raise BadRequest(
                    f"output {out.name!r}: classification must be a count from 1 to its {classes or 'number of'} "
                    f"classes, got {out.classification}"
                )

    def infer(self, req: InferRequest) -> InferResponse:
        metrics = RequestMetrics()
        with metrics.timed(PREPROCESS):
            payload = self._payload(req.inputs)
        requested = req.outputs
        if requested is None:
            requested = [RequestedOutput(s.name) for s in self.outputs]
            if self.has_answer and (payload.form == "image" or self.answer_for_tensors):
                requested.append(RequestedOutput(ANSWER))
        self.check_outputs(requested)
        wants_answer = any(o.name == ANSWER for o in requested)
        prediction = self.component.predict_payload(payload, wants_answer, metrics)
        answer = b""
        if wants_answer:
            assert prediction.answer is not None
            answer = orjson.dumps(prediction.answer.body, option=orjson.OPT_SERIALIZE_NUMPY)
        self._check_response_size(requested, prediction.outputs, len(answer), req.binary_output)
        outputs = []
        for out in requested:
            binary = req.binary_output if out.binary is None else out.binary
            if out.name == ANSWER:
                outputs.append(OutputTensor(ANSWER, "BYTES", [1], [answer], binary))
            elif out.classification:
                strings, shape = self._classify(
                    self.by_output[out.name], prediction.outputs[out.name], out.classification
                )
                outputs.append(OutputTensor(out.name, "BYTES", shape, strings, binary))
            else:
                array = prediction.outputs[out.name]
                outputs.append(
                    OutputTensor(out.name, self.by_output[out.name].datatype, list(array.shape), array, binary)
                )
        parameters = {} if prediction.uncertain is None else {"uncertain": prediction.uncertain}
        seldon_compat.hand_over_metrics(self.component.metrics())
        return InferResponse(self.name, self.version, req.id, outputs, parameters)

    def _check_response_size(
        self, requested: Sequence[RequestedOutput], arrays: Mapping[str, np.ndarray], answer: int, binary: bool
    ) -> None:
        """413 before the response is built when its tensors would exceed max_response_bytes."""
        size = answer
        for out in requested:
            if out.name == ANSWER:
                continue
            array = arrays[out.name]
            if out.classification:
                size += out.classification * (CLASS_STRING_BYTES + self.longest_label)
            elif (binary if out.binary is None else out.binary) or array.dtype.kind == "O":
                size += array.nbytes
            else:
                size += array.size * json_chars(array.dtype)
        if size > self.max_response_bytes:
            raise TooLarge(
                f"the response would hold about {size} bytes, more than max_response_bytes={self.max_response_bytes} "
                "(the parameter sets it): request fewer outputs or a smaller classification"
            )

    def _payload(self, inputs: list[InputTensor]) -> codecs.Payload:
        names = [s.name for s in self.inputs]
        if not inputs:
            raise BadRequest(f"the request has no inputs: expected {', '.join(names)}")
        seen = [t.name for t in inputs]
        unknown = [n for n in seen if n not in names]
        if unknown:
            raise BadRequest(f"unknown input {unknown[0]!r}; the model's inputs: {', '.join(names)}")
        if len(set(seen)) != len(seen):
            raise BadRequest("an input is given more than once")
        if len(inputs) == 1 and inputs[0].datatype == "BYTES":
            return self._image(inputs[0])
        missing = [n for n in names if n not in seen]
        if missing:
            raise BadRequest(f"missing input(s) {', '.join(missing)}: the model needs {', '.join(names)}")
        tensors: dict[str | None, np.ndarray] = {}
        for tensor in inputs:
            spec = self.inputs[names.index(tensor.name)]
            if tensor.datatype != spec.datatype:
                hint = " (or BYTES [1]: an encoded image)" if self.image_input else ""
                raise BadRequest(
                    f"input {spec.name} expects datatype {spec.datatype}{hint} and shape {list(spec.shape)}; got {tensor.datatype} {tensor.shape}"
                )
            tensors[spec.name] = codecs.as_input(spec, tensor.value, "the request")  # type: ignore[arg-type]
        return codecs.Payload("jsonData", tensors)

    def _image(self, tensor: InputTensor) -> codecs.Payload:
        if not self.image_input:
            raise BadRequest(
                f"this model does not take images ({self.component._not_image}): send {self.inputs[0].datatype} tensors"
            )
        if len(tensor.value) != 1:
            raise BadRequest(
                f"input {tensor.name}: one encoded image per request (BYTES shape [1]); got shape {tensor.shape}"
            )
        return codecs.Payload("image", image=tensor.value[0], image_field=f"input {tensor.name} (BYTES)")

    def _classify(self, spec: TensorSpec, raw: np.ndarray, k: int) -> tuple[list[bytes], list[int]]:
        """Triton's classification extension, through postprocess.Classification: "score:index[:label]"."""
        values = spec.quantization.dequantize(raw) if spec.quantization is not None else raw
        body = postprocess.Classification([spec], self.labels, k)({spec.name: values}, (0, 0)).body
        strings = [(f"{c['score']:f}:{c['index']}" + (f":{c['label']}" if self.labels else "")).encode() for c in body]
        shape = [1, len(strings)] if raw.ndim >= 2 and raw.shape[0] == 1 else [len(strings)]
        return strings, shape


CLASS_STRING_BYTES = 32  # "score:index:" of one classification string, at most (e.g. "0.996094:1000:")


def _classes(spec: TensorSpec) -> int | None:
    """The classes an output scores (its elements past a batch dimension of 1); None when a dimension is dynamic."""
    dims = spec.shape[1:] if len(spec.shape) > 1 and spec.shape[0] == 1 else spec.shape
    return None if any(d < 0 for d in dims) else math.prod(dims)


def json_size(spec: TensorSpec) -> int:
    """Bytes an output of `spec` takes at most as JSON data (a dynamic dimension counted as 1)."""
    return math.prod(max(d, 1) for d in spec.shape) * json_chars(spec.dtype)


def json_chars(dtype: np.dtype) -> int:
    """Characters one value of `dtype` takes at most in a JSON list, its comma included."""
    if dtype.kind == "b":
        return len("false,")
    if dtype.kind in "iu":
        return len(str(np.iinfo(dtype).min)) + 1
    return 16 if dtype.itemsize <= 4 else 25  # "-1.1754944e-38," and float64's 17 digits, sign and exponent


# --- REST ----------------------------------------------------------------------------------------------


def _bool_param(params: Mapping[str, Any], key: str, where: str) -> bool | None:
    value = params.get(key)
    if value is None:
        return None
    if not isinstance(value, bool):
        raise BadRequest(f"{where}: parameter {key} must be true or false, got {value!r}")
    return value


def _params(obj: Mapping[str, Any], where: str) -> Mapping[str, Any]:
    params = obj.get("parameters") or {}
    if not isinstance(params, Mapping):
        raise BadRequest(f"{where}: parameters must be an object")
    return params


OIP_BINARY_HINT = f"send tensors as binary data ({HEADER_LENGTH}) or the image as one BYTES element"


def decode_rest(body: bytes, header_length: str | None, max_inputs: int, max_outputs: int) -> InferRequest:
    """An infer request body: JSON, or (binary extension) a JSON header of `header_length` bytes, then raw
    tensors. The JSON's values are counted before it is parsed, its inputs and outputs before they are read."""
    if header_length is None:
        header, rest = body, memoryview(b"")
    else:
        if not (header_length.isascii() and header_length.isdigit() and int(header_length) <= len(body)):
            raise BadRequest(
                f"{HEADER_LENGTH}: {header_length[:40]!r} is not a byte count (digits) within the {len(body)}-byte body"
            )
        header, rest = body[: int(header_length)], memoryview(body)[int(header_length) :]
    seldon_compat.check_json_values(
        header, "the JSON body" if header_length is None else f"the JSON header ({HEADER_LENGTH})", OIP_BINARY_HINT
    )
    try:
        doc = orjson.loads(header)
    except orjson.JSONDecodeError as e:
        where = f"the first {header_length} bytes (the {HEADER_LENGTH})" if header_length is not None else "the body"
        raise BadRequest(f"{where} must be a JSON inference request: {e}") from None
    if not isinstance(doc, Mapping):
        raise BadRequest(f"the inference request must be a JSON object, got {type(doc).__name__}")
    raw_inputs = doc.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise BadRequest('the inference request needs "inputs": a list of {name, shape, datatype, data}')
    if len(raw_inputs) > max_inputs:
        raise BadRequest(f"the request has {len(raw_inputs)} inputs; the model takes {max_inputs}")
    inputs, offset = [], 0
    for i, entry in enumerate(raw_inputs):
        if not isinstance(entry, Mapping) or not isinstance(entry.get("name"), str):
            raise BadRequest(f"inputs[{i}] must be an object with a name, shape, datatype and data")
        where = f"input {entry['name']}"
        datatype = _datatype(entry.get("datatype"), where)
        shape = _shape(entry.get("shape"), where)
        binary_size = _params(entry, where).get("binary_data_size")
        if binary_size is not None:
            if not isinstance(binary_size, int) or isinstance(binary_size, bool) or binary_size < 0:
                raise BadRequest(f"{where}: binary_data_size must be a byte count, got {binary_size!r}")
            if offset + binary_size > len(rest):
                raise BadRequest(
                    f"{where}: binary_data_size is {binary_size} but only {len(rest) - offset} bytes of binary data remain"
                    + ("" if header_length is not None else f" (no {HEADER_LENGTH} header was sent)")
                )
            value = tensor_from_raw(datatype, shape, rest[offset : offset + binary_size], where)  # no copy
            offset += binary_size
        elif "data" in entry:
            value = tensor_from_values(datatype, shape, entry["data"], where)
        else:
            raise BadRequest(f"{where} has neither data nor parameters.binary_data_size")
        inputs.append(InputTensor(entry["name"], datatype, shape, value))
    if offset != len(rest):
        raise BadRequest(f"{len(rest) - offset} bytes of binary data follow the inputs' binary_data_size")
    outputs = None
    if doc.get("outputs") is not None:
        if not isinstance(doc["outputs"], list):
            raise BadRequest('"outputs" must be a list of {name, parameters}')
        if len(doc["outputs"]) > max_outputs:
            raise BadRequest(
                f"the request names {len(doc['outputs'])} outputs; the model has {max_outputs}, each requested at most once"
            )
        outputs = []
        for i, entry in enumerate(doc["outputs"]):
            if not isinstance(entry, Mapping) or not isinstance(entry.get("name"), str):
                raise BadRequest(f"outputs[{i}] must be an object with a name")
            params = _params(entry, f"output {entry['name']}")
            k = params.get("classification", 0)
            if not isinstance(k, int) or isinstance(k, bool):
                raise BadRequest(f"output {entry['name']}: classification must be a whole number, got {k!r}")
            outputs.append(
                RequestedOutput(entry["name"], k, _bool_param(params, "binary_data", f"output {entry['name']}"))
            )
    params = _params(doc, "the request")
    request_id = doc.get("id", "")
    return InferRequest(
        inputs,
        outputs,
        request_id if isinstance(request_id, str) else str(request_id),
        bool(_bool_param(params, "binary_data_output", "the request")),
    )


def encode_rest(resp: InferResponse) -> Response:
    outputs, chunks = [], []
    for out in resp.outputs:
        entry: dict[str, Any] = {"name": out.name, "datatype": out.datatype, "shape": out.shape}
        if out.binary:
            raw = output_raw(out.datatype, out.value)
            entry["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        else:
            entry["data"] = output_values(out.datatype, out.value)
        outputs.append(entry)
    doc: dict[str, Any] = {"model_name": resp.model_name}
    if resp.model_version:
        doc["model_version"] = resp.model_version
    if resp.id:
        doc["id"] = resp.id
    if resp.parameters:
        doc["parameters"] = resp.parameters
    doc["outputs"] = outputs
    header = orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY)
    if not chunks:
        return Response(header, mimetype="application/json")
    return Response(
        header + b"".join(chunks), content_type="application/octet-stream", headers={HEADER_LENGTH: str(len(header))}
    )


def _json(body: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status=status, mimetype="application/json")


def _error(e: SeldonMicroserviceException) -> Response:
    return _json({"error": e.message}, e.status_code)


def rest_routes(component: EdgeModelServer) -> Blueprint:
    """The OIP REST endpoints, as a blueprint for `seldon_compat.rest_blueprint`."""
    model = OipModel(component)
    limit = component._settings.max_request_bytes
    routes = Blueprint("oip", __name__)

    def handled(view: Callable[..., Response]) -> Callable[..., Response]:
        def run(**kwargs: Any) -> Response:
            try:
                return view(**kwargs)
            except SeldonMicroserviceException as e:  # every refusal of ours, with its status
                return _error(e)

        run.__name__ = view.__name__
        return run

    @routes.get("/v2")
    @handled
    def server_metadata() -> Response:
        return _json(model.server_metadata())

    @routes.get("/v2/health/live")
    def live() -> Response:
        return _json({"live": True})

    @routes.get("/v2/health/ready")
    def ready() -> Response:
        return _json({"ready": model.ready}, 200 if model.ready else 503)

    @routes.get("/v2/models/<name>")
    @routes.get("/v2/models/<name>/versions/<version>")
    @handled
    def model_metadata(name: str, version: str = "") -> Response:
        model.check(name, version)
        return _json(model.metadata())

    @routes.get("/v2/models/<name>/ready")
    @routes.get("/v2/models/<name>/versions/<version>/ready")
    @handled
    def model_ready(name: str, version: str = "") -> Response:
        model.check(name, version)
        return _json({"name": model.name, "ready": model.ready}, 200 if model.ready else 503)

    @routes.post("/v2/models/<name>/infer")
    @routes.post("/v2/models/<name>/versions/<version>/infer")
    @handled
    def infer(name: str, version: str = "") -> Response:
        model.check(name, version)
        if request.content_length is not None and request.content_length > limit:
            raise TooLarge(too_large(f"{request.content_length} bytes", limit))
        encoding = request.headers.get("Content-Encoding", "identity").lower()
        if encoding != "identity":
            raise BadRequest(f"Content-Encoding {encoding[:40]} is not supported: send the body uncompressed")
        body = request.get_data(cache=False)
        if len(body) > limit:
            raise TooLarge(too_large(f"{len(body)} bytes", limit))
        infer_request = decode_rest(body, request.headers.get(HEADER_LENGTH), len(model.inputs), model.max_outputs)
        return encode_rest(model.infer(infer_request))

    @routes.route("/v2/<path:rest>", methods=["GET", "POST"])
    def unknown(rest: str) -> Response:  # else Seldon's app answers 500 for a routing miss
        return _json({"error": f"no Open Inference Protocol endpoint {request.method} /v2/{rest}"}, 404)

    return routes


# --- gRPC ----------------------------------------------------------------------------------------------


def _grpc_params(params: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, p in params.items():
        which = p.WhichOneof("parameter_choice")
        out[key] = getattr(p, which) if which else None
    return out


_CONTENTS = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}


def decode_grpc(req: Any, max_outputs: int) -> InferRequest:
    """A ModelInferRequest (already checked by `guarded` against the model's value budget)."""
    raw = list(req.raw_input_contents)
    if raw and len(raw) != len(req.inputs):
        raise BadRequest(
            f"raw_input_contents has {len(raw)} entries for {len(req.inputs)} inputs: one per input, in order"
        )
    inputs = []
    for i, tensor in enumerate(req.inputs):
        where = f"input {tensor.name}"
        datatype = _datatype(tensor.datatype, where)
        shape = [int(d) for d in tensor.shape]
        if any(d < 0 for d in shape):
            raise BadRequest(f"{where}: shape must be non-negative integers, got {shape}")
        if raw:
            value = tensor_from_raw(datatype, shape, raw[i], where)
        else:
            field_name = _CONTENTS.get(datatype)
            if field_name is None:
                raise BadRequest(f"{where}: {datatype} travels only in raw_input_contents")
            value = tensor_from_values(datatype, shape, list(getattr(tensor.contents, field_name)), where)
        inputs.append(InputTensor(tensor.name, datatype, shape, value))
    outputs = None
    if len(req.outputs) > max_outputs:
        raise BadRequest(
            f"the request names {len(req.outputs)} outputs; the model has {max_outputs}, each requested at most once"
        )
    if len(req.outputs):
        outputs = []
        for out in req.outputs:
            k = _grpc_params(out.parameters).get("classification", 0)
            if not isinstance(k, int) or isinstance(k, bool):
                raise BadRequest(f"output {out.name}: classification must be a whole number, got {k!r}")
            outputs.append(RequestedOutput(out.name, k))
    return InferRequest(inputs, outputs, req.id)


# Values a message other than ModelInfer's may hold (names, versions: a few dozen at most).
SMALL_MESSAGE_VALUES = 256


def guarded(message_class: Any, budget: int | None) -> Callable[[bytes], Any]:
    """A request deserializer that counts the message's values before protobuf parses it (see
    protobuf_budget) and returns the error to answer instead of a message past `budget` (None: no count)."""
    name = message_class.DESCRIPTOR.name

    def parse(data: bytes) -> Any:
        if budget is not None:
            try:
                protobuf_budget.elements(data, message_class.DESCRIPTOR, budget)
            except protobuf_budget.OverBudget as e:
                return TooLarge(
                    f"the {name} holds more than {e.elements - 1} values, more than {budget}: twice the model's input "
                    f"size plus {seldon_compat.JSON_VALUES_SLACK} (set by the model, no parameter); send tensors in "
                    "raw_input_contents"
                )
            except protobuf_budget.Malformed as e:
                return BadRequest(f"the message is not a valid {name}: {e}")
        return message_class.FromString(data)

    return parse


def grpc_registrar(component: EdgeModelServer) -> Callable[[grpc.Server], None]:
    """Adds `inference.GRPCInferenceService` to a gRPC server (see `seldon_compat.add_grpc_services`), every
    request counted before it is parsed (`guarded`)."""
    from open_inference.grpc import protocol as pb

    model = OipModel(component)

    def refused(context: grpc.ServicerContext, e: SeldonMicroserviceException) -> Any:
        context.abort(GRPC_CODES.get(e.status_code, grpc.StatusCode.INTERNAL), e.message)

    def answering(method: Callable[[Any], Any]) -> Callable[[Any, grpc.ServicerContext], Any]:
        def handle(request: Any, context: grpc.ServicerContext) -> Any:
            try:
                if isinstance(request, SeldonMicroserviceException):  # refused by `guarded`
                    raise request
                return method(request)
            except SeldonMicroserviceException as e:
                return refused(context, e)

        return handle

    def model_ready(request: Any) -> Any:
        model.check(request.name, request.version)
        return pb.ModelReadyResponse(ready=model.ready)

    def model_metadata(request: Any) -> Any:
        model.check(request.name, request.version)
        meta = model.metadata()
        tensor = pb.ModelMetadataResponse.TensorMetadata
        return pb.ModelMetadataResponse(
            name=meta["name"],
            versions=meta["versions"],
            platform=meta["platform"],
            inputs=[tensor(**t) for t in meta["inputs"]],
            outputs=[tensor(**t) for t in meta["outputs"]],
        )

    def model_infer(request: Any) -> Any:
        model.check(request.model_name, request.model_version)
        result = model.infer(decode_grpc(request, model.max_outputs))
        reply = pb.ModelInferResponse(model_name=result.model_name, model_version=result.model_version, id=result.id)
        for key, value in result.parameters.items():
            reply.parameters[key].bool_param = bool(value)
        for out in result.outputs:
            reply.outputs.add(name=out.name, datatype=out.datatype, shape=out.shape)
            reply.raw_output_contents.append(output_raw(out.datatype, out.value))
        return reply

    methods: dict[str, tuple[Any, Any, Callable[[Any], Any]]] = {  # name: (request class, response class, handler)
        "ServerLive": (pb.ServerLiveRequest, pb.ServerLiveResponse, lambda r: pb.ServerLiveResponse(live=True)),
        "ServerReady": (
            pb.ServerReadyRequest,
            pb.ServerReadyResponse,
            lambda r: pb.ServerReadyResponse(ready=model.ready),
        ),
        "ModelReady": (pb.ModelReadyRequest, pb.ModelReadyResponse, model_ready),
        "ServerMetadata": (
            pb.ServerMetadataRequest,
            pb.ServerMetadataResponse,
            lambda r: pb.ServerMetadataResponse(**model.server_metadata()),
        ),
        "ModelMetadata": (pb.ModelMetadataRequest, pb.ModelMetadataResponse, model_metadata),
        "ModelInfer": (pb.ModelInferRequest, pb.ModelInferResponse, model_infer),
    }
    infer_budget = component.rest_options.max_json_values
    handlers = {
        name: grpc.unary_unary_rpc_method_handler(
            answering(handler),
            request_deserializer=guarded(request, infer_budget if name == "ModelInfer" else SMALL_MESSAGE_VALUES),
            response_serializer=response.SerializeToString,
        )
        for name, (request, response, handler) in methods.items()
    }
    service = grpc.method_handlers_generic_handler("inference.GRPCInferenceService", handlers)

    def register(server: grpc.Server) -> None:
        server.add_generic_rpc_handlers((service,))

    return register
