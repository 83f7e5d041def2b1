"""The Open Inference Protocol over REST: `/v2`, `/v2/health/{live,ready}`, `/v2/models/{name}[/versions/{v}]`,
`.../ready` and `.../infer`, as a Flask blueprint on Seldon's REST app. Tensors travel as JSON `data` or in
Triton's binary tensor data extension: a JSON header of `Inference-Header-Content-Length` bytes, then the raw
tensors. Errors answer `{"error": "..."}` with the error's own status."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import orjson
from flask import Blueprint, Response, request

from ...errors import BadRequest, EdgeError, NotFound, TooLarge
from .. import json_limits
from ..errors import oip_error, request_too_large
from .model import OipModel
from .tensors import datatype_of, output_raw, output_values, shape_of, tensor_from_raw, tensor_from_values
from .types import InferRequest, InferResponse, InputTensor, RequestedOutput

HEADER_LENGTH = "Inference-Header-Content-Length"


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


def decode_rest(body: bytes, header_length: str | None, model: OipModel) -> InferRequest:
    """An infer request body: JSON, or (binary extension) a JSON header of `header_length` bytes, then raw
    tensors. The JSON's values are counted before it is parsed, its inputs and outputs before they are read."""
    max_inputs, max_outputs = len(model.inputs), model.max_outputs
    if header_length is None:
        header, rest = body, memoryview(b"")
    else:
        if not (header_length.isascii() and header_length.isdigit() and int(header_length) <= len(body)):
            raise BadRequest(
                f"{HEADER_LENGTH}: {header_length[:40]!r} is not a byte count (digits) within the {len(body)}-byte body"
            )
        header, rest = body[: int(header_length)], memoryview(body)[int(header_length) :]
    where = "the JSON body" if header_length is None else f"the JSON header ({HEADER_LENGTH})"
    json_limits.check_values(header, model.values_limit, where, json_limits.OIP_HINT)
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
        datatype = datatype_of(entry.get("datatype"), where)
        shape = shape_of(entry.get("shape"), where)
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


def routes(model: OipModel) -> Blueprint:
    """The OIP REST endpoints, as a Flask blueprint (the Seldon adapter registers it on the wrapper's app)."""
    limit = model.model.settings.max_request_bytes
    routes = Blueprint("oip", __name__)

    def handled(view: Callable[..., Response]) -> Callable[..., Response]:
        """Every refusal of ours answered here, in the protocol's body, with its own status."""

        def run(**kwargs: Any) -> Response:
            try:
                return view(**kwargs)
            except EdgeError as e:
                return _json(oip_error(e), e.status)

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
            raise TooLarge(request_too_large(f"{request.content_length} bytes", limit))
        encoding = request.headers.get("Content-Encoding", "identity").lower()
        if encoding != "identity":
            raise BadRequest(f"Content-Encoding {encoding[:40]} is not supported: send the body uncompressed")
        body = request.get_data(cache=False)
        if len(body) > limit:
            raise TooLarge(request_too_large(f"{len(body)} bytes", limit))
        return encode_rest(model.infer(decode_rest(body, request.headers.get(HEADER_LENGTH), model)))

    @routes.route("/v2/<path:rest>", methods=["GET", "POST"])
    @handled
    def unknown(rest: str) -> Response:  # else Seldon's app answers 500 for a routing miss
        raise NotFound(f"no Open Inference Protocol endpoint {request.method} /v2/{rest}")

    return routes
