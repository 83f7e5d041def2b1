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
Errors: `{"error": "..."}` with 400 (bad request) or 404 (unknown model or version); gRPC
INVALID_ARGUMENT / NOT_FOUND with the same message.
"""

from __future__ import annotations

import binascii
import struct
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import grpc
import numpy as np
import orjson
import pybase64
from flask import Blueprint, Response, request

from . import __version__, codecs, postprocess, seldon_compat
from .errors import BadRequest
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


class OipError(Exception):
    """A request the protocol refuses: 400 / INVALID_ARGUMENT, or 404 / NOT_FOUND for an unknown model."""

    def __init__(self, message: str, not_found: bool = False):
        super().__init__(message)
        self.message = message
        self.not_found = not_found

    @property
    def http_status(self) -> int:
        return 404 if self.not_found else 400

    @property
    def grpc_code(self) -> grpc.StatusCode:
        return grpc.StatusCode.NOT_FOUND if self.not_found else grpc.StatusCode.INVALID_ARGUMENT


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
    return int(np.prod(shape, dtype=np.int64)) if len(shape) else 1


def _shape(value: Any, where: str) -> list[int]:
    if not isinstance(value, (list, tuple)) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in value
    ):
        raise OipError(f"{where}: shape must be a list of non-negative integers, got {value!r}")
    return list(value)


def _datatype(value: Any, where: str) -> str:
    if value not in DTYPES:
        raise OipError(f"{where}: datatype {value!r} is not an OIP datatype: expected one of {', '.join(DTYPES)}")
    return value


def bytes_elements(raw: bytes | memoryview, count: int, where: str) -> list[bytes]:
    """BYTES in the binary form: each element a little-endian uint32 length, then that many bytes."""
    elements, offset = [], 0
    while offset < len(raw):
        if offset + 4 > len(raw):
            raise OipError(f"{where}: BYTES data ends inside an element's 4-byte length prefix")
        (size,) = struct.unpack_from("<I", raw, offset)
        offset += 4
        if offset + size > len(raw):
            raise OipError(f"{where}: BYTES element of {size} bytes, but only {len(raw) - offset} remain")
        elements.append(bytes(raw[offset : offset + size]))
        offset += size
    if len(elements) != count:
        raise OipError(f"{where}: {len(elements)} BYTES elements but the shape needs {count}")
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
        raise OipError(
            f"{where}: {len(raw)} bytes of data, but shape {shape} of {datatype} needs {count * dtype.itemsize}"
        )
    return np.frombuffer(raw, dtype).astype(DTYPES[datatype], copy=False).reshape(shape)


def tensor_from_values(datatype: str, shape: list[int], values: Any, where: str) -> np.ndarray | list[bytes]:
    """A tensor from typed values (JSON `data`, gRPC `contents`), flat or nested, row-major."""
    count = _count(shape)
    if datatype == "BYTES":
        flat = _flatten(values)
        elements = []
        for v in flat:
            if isinstance(v, str):
                elements.append(v.encode())
            elif isinstance(v, (bytes, bytearray)):
                elements.append(bytes(v))
            elif isinstance(v, Mapping) and isinstance(v.get("b64"), str):  # TF Serving / OVMS style
                elements.append(_b64(v["b64"], where))
            else:
                raise OipError(f'{where}: BYTES data must be strings (or {{"b64": ...}}), got {type(v).__name__}')
        if len(elements) != count:
            raise OipError(f"{where}: {len(elements)} values but shape {shape} needs {count}")
        return elements
    try:
        array = codecs.numbers(values, f"{where}: data ({datatype})")
    except BadRequest as e:
        raise OipError(str(e)) from None
    if array.size != count:
        raise OipError(f"{where}: {array.size} values but shape {shape} needs {count}")
    spec = TensorSpec(where, DTYPES[datatype], tuple(shape))
    try:
        return codecs.as_input(spec, array.reshape(shape), "data")
    except BadRequest as e:
        raise OipError(f"{where}: {e}") from None


def _flatten(values: Any) -> list:
    if isinstance(values, (list, tuple)):
        out: list = []
        for v in values:
            out.extend(_flatten(v)) if isinstance(v, (list, tuple)) else out.append(v)
        return out
    return [values]


def _b64(text: str, where: str) -> bytes:
    try:
        return pybase64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise OipError(f"{where}: b64 is not valid base64") from None


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
        self._classifiers: dict[tuple[str, int], postprocess.Classification] = {}

    # --- identity, health, metadata

    def check(self, name: str, version: str = "") -> None:
        if name != self.name:
            raise OipError(f"unknown model {name!r}: this server serves {self.name!r}", not_found=True)
        if version and version != self.version:
            served = f"version {self.version!r}" if self.version else "no versions (leave the version out)"
            raise OipError(f"model {name!r} has no version {version!r}: it serves {served}", not_found=True)

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

    def infer(self, req: InferRequest) -> InferResponse:
        metrics = RequestMetrics()
        with metrics.timed(PREPROCESS):
            payload = self._payload(req.inputs)
        requested = req.outputs
        if requested is None:
            default = [RequestedOutput(s.name) for s in self.outputs]
            if self.has_answer and (payload.form == "image" or self.answer_for_tensors):
                default.append(RequestedOutput(ANSWER))
            requested = default
        for out in requested:
            if out.name == ANSWER:
                if not self.has_answer:
                    raise OipError(f"output {ANSWER!r} needs a post-processing; this model has none (postprocess=none)")
                if out.classification:
                    raise OipError(
                        f"classification applies to the model's outputs ({', '.join(self.by_output)}), not {ANSWER!r}"
                    )
            elif out.name not in self.by_output:
                raise OipError(
                    f"unknown output {out.name!r}; the model's outputs: {', '.join([*self.by_output, *([ANSWER] if self.has_answer else [])])}"
                )
            if out.classification < 0:
                raise OipError(f"output {out.name!r}: classification must be a count >= 1, got {out.classification}")
        wants_answer = any(o.name == ANSWER for o in requested)
        try:
            prediction = self.component.predict_payload(payload, wants_answer, metrics)
        except BadRequest as e:
            raise OipError(str(e)) from None
        outputs = []
        for out in requested:
            binary = req.binary_output if out.binary is None else out.binary
            if out.name == ANSWER:
                assert prediction.answer is not None
                outputs.append(
                    OutputTensor(
                        ANSWER,
                        "BYTES",
                        [1],
                        [orjson.dumps(prediction.answer.body, option=orjson.OPT_SERIALIZE_NUMPY)],
                        binary,
                    )
                )
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

    def _payload(self, inputs: list[InputTensor]) -> codecs.Payload:
        names = [s.name for s in self.inputs]
        if not inputs:
            raise OipError(f"the request has no inputs: expected {', '.join(names)}")
        seen = [t.name for t in inputs]
        unknown = [n for n in seen if n not in names]
        if unknown:
            raise OipError(f"unknown input {unknown[0]!r}; the model's inputs: {', '.join(names)}")
        if len(set(seen)) != len(seen):
            raise OipError("an input is given more than once")
        if len(inputs) == 1 and inputs[0].datatype == "BYTES":
            return self._image(inputs[0])
        missing = [n for n in names if n not in seen]
        if missing:
            raise OipError(f"missing input(s) {', '.join(missing)}: the model needs {', '.join(names)}")
        tensors: dict[str | None, np.ndarray] = {}
        for tensor in inputs:
            spec = self.inputs[names.index(tensor.name)]
            if tensor.datatype != spec.datatype:
                hint = " (or BYTES [1]: an encoded image)" if self.image_input else ""
                raise OipError(
                    f"input {spec.name} expects datatype {spec.datatype}{hint} and shape {list(spec.shape)}; got {tensor.datatype} {tensor.shape}"
                )
            try:
                tensors[spec.name] = codecs.as_input(spec, tensor.value, "the request")  # type: ignore[arg-type]
            except BadRequest as e:
                raise OipError(str(e)) from None
        return codecs.Payload("jsonData", tensors)

    def _image(self, tensor: InputTensor) -> codecs.Payload:
        if not self.image_input:
            raise OipError(
                f"this model does not take images ({self.component._not_image}): send {self.inputs[0].datatype} tensors"
            )
        if len(tensor.value) != 1:
            raise OipError(
                f"input {tensor.name}: one encoded image per request (BYTES shape [1]); got shape {tensor.shape}"
            )
        return codecs.Payload("image", image=tensor.value[0], image_field=f"input {tensor.name} (BYTES)")

    def _classify(self, spec: TensorSpec, raw: np.ndarray, k: int) -> tuple[list[bytes], list[int]]:
        """Triton's classification extension, through postprocess.Classification: "score:index[:label]"."""
        classifier = self._classifiers.get((spec.name, k))
        if classifier is None:
            classifier = self._classifiers.setdefault(
                (spec.name, k), postprocess.Classification([spec], self.labels, k)
            )
        values = spec.quantization.dequantize(raw) if spec.quantization is not None else raw
        body = classifier({spec.name: values}, (0, 0)).body
        strings = [(f"{c['score']:f}:{c['index']}" + (f":{c['label']}" if self.labels else "")).encode() for c in body]
        shape = [1, len(strings)] if raw.ndim >= 2 and raw.shape[0] == 1 else [len(strings)]
        return strings, shape


# --- REST ----------------------------------------------------------------------------------------------


def _bool_param(params: Mapping[str, Any], key: str, where: str) -> bool | None:
    value = params.get(key)
    if value is None:
        return None
    if not isinstance(value, bool):
        raise OipError(f"{where}: parameter {key} must be true or false, got {value!r}")
    return value


def _params(obj: Mapping[str, Any], where: str) -> Mapping[str, Any]:
    params = obj.get("parameters") or {}
    if not isinstance(params, Mapping):
        raise OipError(f"{where}: parameters must be an object")
    return params


def decode_rest(body: bytes, header_length: str | None) -> InferRequest:
    """An infer request body: JSON, or (binary extension) a JSON header of `header_length` bytes, then raw tensors."""
    if header_length is None:
        header, rest = body, memoryview(b"")
    else:
        try:
            size = int(header_length)
        except ValueError:
            size = -1
        if not 0 <= size <= len(body):
            raise OipError(f"{HEADER_LENGTH}: {header_length!r} is not a byte count within the {len(body)}-byte body")
        header, rest = body[:size], memoryview(body)[size:]
    try:
        doc = orjson.loads(header)
    except orjson.JSONDecodeError as e:
        where = f"the first {header_length} bytes (the {HEADER_LENGTH})" if header_length is not None else "the body"
        raise OipError(f"{where} must be a JSON inference request: {e}") from None
    if not isinstance(doc, Mapping):
        raise OipError(f"the inference request must be a JSON object, got {type(doc).__name__}")
    raw_inputs = doc.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise OipError('the inference request needs "inputs": a list of {name, shape, datatype, data}')
    inputs, offset = [], 0
    for i, entry in enumerate(raw_inputs):
        if not isinstance(entry, Mapping) or not isinstance(entry.get("name"), str):
            raise OipError(f"inputs[{i}] must be an object with a name, shape, datatype and data")
        where = f"input {entry['name']}"
        datatype = _datatype(entry.get("datatype"), where)
        shape = _shape(entry.get("shape"), where)
        binary_size = _params(entry, where).get("binary_data_size")
        if binary_size is not None:
            if not isinstance(binary_size, int) or isinstance(binary_size, bool) or binary_size < 0:
                raise OipError(f"{where}: binary_data_size must be a byte count, got {binary_size!r}")
            if offset + binary_size > len(rest):
                raise OipError(
                    f"{where}: binary_data_size is {binary_size} but only {len(rest) - offset} bytes of binary data remain"
                    + ("" if header_length is not None else f" (no {HEADER_LENGTH} header was sent)")
                )
            value = tensor_from_raw(datatype, shape, rest[offset : offset + binary_size], where)  # no copy
            offset += binary_size
        elif "data" in entry:
            value = tensor_from_values(datatype, shape, entry["data"], where)
        else:
            raise OipError(f"{where} has neither data nor parameters.binary_data_size")
        inputs.append(InputTensor(entry["name"], datatype, shape, value))
    if offset != len(rest):
        raise OipError(f"{len(rest) - offset} bytes of binary data follow the inputs' binary_data_size")
    outputs = None
    if doc.get("outputs") is not None:
        if not isinstance(doc["outputs"], list):
            raise OipError('"outputs" must be a list of {name, parameters}')
        outputs = []
        for i, entry in enumerate(doc["outputs"]):
            if not isinstance(entry, Mapping) or not isinstance(entry.get("name"), str):
                raise OipError(f"outputs[{i}] must be an object with a name")
            params = _params(entry, f"output {entry['name']}")
            k = params.get("classification", 0)
            if not isinstance(k, int) or isinstance(k, bool):
                raise OipError(f"output {entry['name']}: classification must be a whole number, got {k!r}")
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


def _error(e: OipError) -> Response:
    return _json({"error": e.message}, e.http_status)


def rest_routes(component: EdgeModelServer) -> Blueprint:
    """The OIP REST endpoints, as a blueprint for `seldon_compat.rest_blueprint`."""
    model = OipModel(component)
    limit = component._settings.max_request_bytes
    routes = Blueprint("oip", __name__)

    def handled(view: Callable[..., Response]) -> Callable[..., Response]:
        def run(**kwargs: Any) -> Response:
            try:
                return view(**kwargs)
            except OipError as e:
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
            raise OipError(f"the request body has {request.content_length} bytes; max_request_bytes is {limit}")
        encoding = request.headers.get("Content-Encoding", "identity").lower()
        if encoding != "identity":
            raise OipError(f"Content-Encoding {encoding} is not supported: send the body uncompressed")
        if request.headers.get(HEADER_LENGTH) is None:  # a JSON body: its values counted before it is parsed
            try:
                seldon_compat.check_json_body()
            except seldon_compat.RequestRejected as e:
                raise OipError(e.message) from None
        body = request.get_data(cache=False)
        if len(body) > limit:
            raise OipError(f"the request body has {len(body)} bytes; max_request_bytes is {limit}")
        return encode_rest(model.infer(decode_rest(body, request.headers.get(HEADER_LENGTH))))

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


def decode_grpc(req: Any) -> InferRequest:
    raw = list(req.raw_input_contents)
    if raw and len(raw) != len(req.inputs):
        raise OipError(
            f"raw_input_contents has {len(raw)} entries for {len(req.inputs)} inputs: one per input, in order"
        )
    inputs = []
    for i, tensor in enumerate(req.inputs):
        where = f"input {tensor.name}"
        datatype = _datatype(tensor.datatype, where)
        shape = [int(d) for d in tensor.shape]
        if any(d < 0 for d in shape):
            raise OipError(f"{where}: shape must be non-negative integers, got {shape}")
        if raw:
            value = tensor_from_raw(datatype, shape, raw[i], where)
        else:
            field_name = _CONTENTS.get(datatype)
            if field_name is None:
                raise OipError(f"{where}: {datatype} travels only in raw_input_contents")
            value = tensor_from_values(datatype, shape, list(getattr(tensor.contents, field_name)), where)
        inputs.append(InputTensor(tensor.name, datatype, shape, value))
    outputs = None
    if len(req.outputs):
        outputs = []
        for out in req.outputs:
            k = _grpc_params(out.parameters).get("classification", 0)
            if not isinstance(k, int) or isinstance(k, bool):
                raise OipError(f"output {out.name}: classification must be a whole number, got {k!r}")
            outputs.append(RequestedOutput(out.name, k))
    return InferRequest(inputs, outputs, req.id)


def grpc_registrar(component: EdgeModelServer) -> Callable[[grpc.Server], None]:
    """Adds `inference.GRPCInferenceService` to a gRPC server (see `seldon_compat.add_grpc_services`)."""
    from open_inference.grpc import protocol as pb
    from open_inference.grpc import service

    model = OipModel(component)

    def answer(context: grpc.ServicerContext, e: OipError) -> Any:
        context.abort(e.grpc_code, e.message)

    class Servicer(service.GRPCInferenceServiceServicer):
        def ServerLive(self, request: Any, context: grpc.ServicerContext) -> Any:
            return pb.ServerLiveResponse(live=True)

        def ServerReady(self, request: Any, context: grpc.ServicerContext) -> Any:
            return pb.ServerReadyResponse(ready=model.ready)

        def ModelReady(self, request: Any, context: grpc.ServicerContext) -> Any:
            try:
                model.check(request.name, request.version)
            except OipError as e:
                return answer(context, e)
            return pb.ModelReadyResponse(ready=model.ready)

        def ServerMetadata(self, request: Any, context: grpc.ServicerContext) -> Any:
            return pb.ServerMetadataResponse(**model.server_metadata())

        def ModelMetadata(self, request: Any, context: grpc.ServicerContext) -> Any:
            try:
                model.check(request.name, request.version)
            except OipError as e:
                return answer(context, e)
            meta = model.metadata()
            tensor = pb.ModelMetadataResponse.TensorMetadata
            return pb.ModelMetadataResponse(
                name=meta["name"],
                versions=meta["versions"],
                platform=meta["platform"],
                inputs=[tensor(**t) for t in meta["inputs"]],
                outputs=[tensor(**t) for t in meta["outputs"]],
            )

        def ModelInfer(self, request: Any, context: grpc.ServicerContext) -> Any:
            try:
                model.check(request.model_name, request.model_version)
                result = model.infer(decode_grpc(request))
            except OipError as e:
                return answer(context, e)
            reply = pb.ModelInferResponse(
                model_name=result.model_name, model_version=result.model_version, id=result.id
            )
            for key, value in result.parameters.items():
                reply.parameters[key].bool_param = bool(value)
            for out in result.outputs:
                reply.outputs.add(name=out.name, datatype=out.datatype, shape=out.shape)
                reply.raw_output_contents.append(output_raw(out.datatype, out.value))
            return reply

    servicer = Servicer()

    def register(server: grpc.Server) -> None:
        service.add_GRPCInferenceServiceServicer_to_server(servicer, server)

    return register
