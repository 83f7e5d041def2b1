"""Seldon payloads <-> numpy: what a request carries, and the response in the form the client used.

REST requests arrive as dicts (the wrapper has parsed the JSON), gRPC requests as SeldonMessage
protos; both decode to one `Payload`, and `encode` writes the response back in the same protocol.
Binary forms (binData, tftensor's tensor_content) are never round-tripped through JSON.
"""

from __future__ import annotations

import binascii
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote_plus

import numpy as np
import orjson
import pybase64
from google.protobuf import json_format, struct_pb2
from seldon_core.proto import prediction_pb2
from seldon_core.proto.tensorflow.core.framework import tensor_pb2, types_pb2

from ...core.payload import Payload
from ...core.postprocess import Answer
from ...datatypes import BY_NUMPY, BY_TF
from ...errors import BadRequest
from .. import json_limits

TENSOR_FORMS = ("ndarray", "tensor", "tftensor")
EXPECTED_PAYLOAD = (
    "expected one of data.ndarray, data.tensor, data.tftensor (a tensor for the input), "
    "jsonData (one entry per input name), binData or strData (an encoded JPEG/PNG/BMP image, base64 in JSON), "
    'jsonData {"image_uri": "s3://..."}, or an S3 bucket notification ({"Records": [...]}, also as a CloudEvent)'
)
# Forms whose images are named by URI and fetched from the image store.
REFERENCE_FORMS = ("image_uri", "s3_event")


def _s3_event(body: Mapping[str, Any], values_limit: int | None) -> Payload | None:
    """An S3 bucket notification as Ceph RGW, MinIO and AWS send it (`{"Records": [...]}`), one record
    alone (the data of Knative CephSource's CloudEvents), an AWS test event, or a structured CloudEvent
    whose data (or data_base64) is one of these; None when `body` is none of them. Only object creations
    name images: other events (deletes, tests) are acknowledged with no answer, so their source does not
    retry them."""
    if "specversion" in body:
        if "data_base64" in body:
            body = _cloudevent_data(body["data_base64"], values_limit)
        elif isinstance(body.get("data"), Mapping):
            body = body["data"]
    if isinstance(body.get("Records"), list):
        records = body["Records"]
    elif "eventName" in body and "s3" in body:
        records = [body]
    elif body.get("Event") == "s3:TestEvent":
        records = []
    else:
        return None
    uris = []
    for i, record in enumerate(records):
        try:
            if "ObjectCreated" not in str(record.get("eventName", "")):
                continue
            bucket, key = record["s3"]["bucket"]["name"], record["s3"]["object"]["key"]
        except (AttributeError, KeyError, TypeError):
            raise BadRequest(f"Records[{i}] is not an S3 event record with s3.bucket.name and s3.object.key") from None
        uris.append(f"s3://{bucket}/{unquote_plus(str(key))}")  # keys arrive URL-encoded
    return Payload("s3_event", image_uris=tuple(uris))


def _cloudevent_data(text: Any, values_limit: int | None) -> Mapping[str, Any]:
    """A structured CloudEvent's data_base64 (binary data, here JSON), counted as JSON before it is parsed."""
    data = _image_bytes(text, "data_base64", "JSON (an S3 bucket notification)")
    json_limits.check_values(data, values_limit, "the CloudEvent's data_base64")
    try:
        decoded = orjson.loads(data)
    except orjson.JSONDecodeError as e:
        raise BadRequest(f"the CloudEvent's data_base64 is not JSON: {e}") from None
    if not isinstance(decoded, Mapping):
        raise BadRequest(f"the CloudEvent's data_base64 must hold a JSON object, got {type(decoded).__name__}")
    return decoded


def _tags(meta: Any) -> dict[str, Any]:
    tags = meta.get("tags") if isinstance(meta, Mapping) else None
    return dict(tags) if isinstance(tags, Mapping) else {}


def tensor_from_tf(proto: tensor_pb2.TensorProto) -> np.ndarray:
    """A numpy array from a TensorProto (no TensorFlow needed): tensor_content bytes, or the typed value list."""
    datatype = BY_TF.get(proto.dtype)
    if datatype is None:
        name = types_pb2.DataType.Name(proto.dtype) if proto.dtype in types_pb2.DataType.values() else proto.dtype
        raise BadRequest(
            f"tftensor dtype {name} is not supported: expected one of {', '.join(types_pb2.DataType.Name(k) for k in BY_TF)}"
        )
    shape = tuple(d.size for d in proto.tensor_shape.dim)
    count = int(np.prod(shape)) if shape else 1
    if proto.tensor_content:
        values = np.frombuffer(proto.tensor_content, datatype.numpy)
    else:
        values = np.asarray(getattr(proto, datatype.tf_values or "int_val"), datatype.numpy)
        if values.size == 1 and count > 1:  # TensorFlow's shorthand: one value fills the tensor
            values = np.full(count, values[0], datatype.numpy)
    if values.size != count:
        raise BadRequest(f"tftensor has {values.size} values but its shape {list(shape)} needs {count}")
    return values.reshape(shape)


def tensor_to_tf(array: np.ndarray) -> tensor_pb2.TensorProto:
    proto = tensor_pb2.TensorProto(dtype=BY_NUMPY[array.dtype].tf, tensor_content=np.ascontiguousarray(array).tobytes())
    for size in array.shape:
        proto.tensor_shape.dim.add(size=size)
    return proto


def tensor_to_json(array: np.ndarray) -> dict[str, Any]:
    """A TensorProto in its JSON form: dtype, shape and the bytes as base64 (cheap in any protocol)."""
    return json_format.MessageToDict(tensor_to_tf(array))


def numbers(values: Any, where: str) -> np.ndarray:
    """An array of numbers from JSON lists, or a BadRequest for ragged or non-numeric input."""
    try:
        array = np.asarray(values)
    except ValueError:
        array = np.empty(0, dtype=object)
    if array.dtype.kind not in "biuf":
        raise BadRequest(f"{where} must be a rectangular array of numbers (nested lists of equal length)")
    return array


def _image_bytes(value: Any, field_name: str, what: str = "an encoded JPEG, PNG or BMP") -> bytes:
    """binData/strData as JSON carries it: a base64 string (multipart forms arrive base64-encoded too)."""
    if not isinstance(value, (str, bytes)):
        raise BadRequest(f"{field_name} must be a base64 string of {what}, got {type(value).__name__}")
    try:
        return pybase64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest(f"{field_name} is not valid base64: expected {what}, base64-encoded") from None


def _default_data_rest(data: Any) -> Payload:
    if not isinstance(data, Mapping):
        raise BadRequest(f"data must be an object with ndarray, tensor or tftensor, got {type(data).__name__}")
    if "ndarray" in data:
        return Payload("ndarray", {None: numbers(data["ndarray"], "data.ndarray")})
    if "tensor" in data:
        tensor = data["tensor"]
        if not isinstance(tensor, Mapping) or "shape" not in tensor or "values" not in tensor:
            raise BadRequest('data.tensor must be {"shape": [...], "values": [...]}')
        return Payload("tensor", {None: _shaped(tensor["values"], tensor["shape"], "data.tensor")})
    if "tftensor" in data:
        try:
            proto = json_format.ParseDict(data["tftensor"], tensor_pb2.TensorProto())
        except (json_format.ParseError, TypeError) as e:
            raise BadRequest(f"data.tftensor is not a TensorProto in JSON form: {e}") from None
        return Payload("tftensor", {None: tensor_from_tf(proto)})
    raise BadRequest(f"data has none of ndarray, tensor, tftensor (keys: {', '.join(data) or 'none'})")


def _shaped(values: Any, shape: Any, where: str) -> np.ndarray:
    array = numbers(values, f"{where}.values").reshape(-1)
    shape_array = numbers(shape, f"{where}.shape")
    if shape_array.dtype.kind not in "iu" or shape_array.ndim != 1 or (shape_array < 0).any():
        raise BadRequest(f"{where}.shape must be a list of non-negative integers")
    if array.size != int(np.prod(shape_array)):
        raise BadRequest(
            f"{where} has {array.size} values but its shape {shape_array.tolist()} needs {int(np.prod(shape_array))}"
        )
    return array.reshape(shape_array.tolist())


def _json_inputs(obj: Any, values_limit: int | None) -> Payload:
    if isinstance(obj, Mapping) and list(obj) == ["image_uri"]:
        return Payload("image_uri", image_uris=(obj["image_uri"],))
    if isinstance(obj, Mapping) and (event := _s3_event(obj, values_limit)) is not None:
        return event
    if not isinstance(obj, Mapping) or not obj:
        raise BadRequest("jsonData must be an object with one entry per input name, each a nested list of numbers")
    return Payload("jsonData", {str(k): numbers(v, f"jsonData[{k!r}]") for k, v in obj.items()})


def decode_rest(request: Any, values_limit: int | None) -> Payload:
    """A REST request (the dict Seldon's wrapper parsed from JSON or a multipart form, its values counted
    before); JSON within it (a CloudEvent's data_base64) is counted against `values_limit` before parsing."""
    if not isinstance(request, Mapping):
        raise BadRequest(f"the request body must be a JSON object, got {type(request).__name__}: {EXPECTED_PAYLOAD}")
    payload = _decode_rest(request, values_limit)
    payload.tags = _tags(request.get("meta"))
    return payload


def _decode_rest(request: Mapping[str, Any], values_limit: int | None) -> Payload:
    if (event := _s3_event(request, values_limit)) is not None:
        return event
    if "binData" in request:
        return Payload("image", image=_image_bytes(request["binData"], "binData"))
    if "strData" in request:
        return Payload("image", image=_image_bytes(request["strData"], "strData"))
    if "data" in request:
        return _default_data_rest(request["data"])
    if "jsonData" in request:
        return _json_inputs(request["jsonData"], values_limit)
    keys = ", ".join(request) or "none"
    raise BadRequest(f"the request has no payload (keys: {keys}): {EXPECTED_PAYLOAD}")


def decode_grpc(request: prediction_pb2.SeldonMessage, values_limit: int | None) -> Payload:
    """A gRPC SeldonMessage; binary forms stay binary."""
    payload = _decode_grpc(request, values_limit)
    if request.meta.tags:
        payload.tags = json_format.MessageToDict(request.meta)["tags"]
    return payload


def _decode_grpc(request: prediction_pb2.SeldonMessage, values_limit: int | None) -> Payload:
    which = request.WhichOneof("data_oneof")
    if which == "binData":
        return Payload("image", image=request.binData)
    if which == "strData":
        return Payload("image", image=_image_bytes(request.strData, "strData"))
    if which == "jsonData":
        return _json_inputs(json_format.MessageToDict(request.jsonData), values_limit)
    if which == "data":
        form = request.data.WhichOneof("data_oneof")
        if form == "tftensor":
            return Payload("tftensor", {None: tensor_from_tf(request.data.tftensor)})
        if form == "tensor":
            return Payload(
                "tensor", {None: _shaped(request.data.tensor.values, list(request.data.tensor.shape), "data.tensor")}
            )
        if form == "ndarray":
            return Payload("ndarray", {None: numbers(json_format.MessageToDict(request.data.ndarray), "data.ndarray")})
        raise BadRequest("data has none of ndarray, tensor, tftensor")
    raise BadRequest(f"the request has no payload: {EXPECTED_PAYLOAD}")


def encode(
    form: str, outputs: Mapping[str, np.ndarray], answer: Answer | None, meta: dict[str, Any], proto: bool
) -> Any:
    """The response in the request's protocol (a dict for REST, a SeldonMessage for gRPC) and form.

    The one place that decides what a response holds: a post-processed `answer` as jsonData; else a
    single output in the request's tensor form; else several outputs as jsonData keyed by output name:
    TensorProtos (so they stay binary) for a tftensor request, nested lists otherwise. REST bodies keep
    numpy arrays: the app's orjson writes them.
    """
    if answer is not None:
        return _json_data(answer.body, meta, proto)
    if form in TENSOR_FORMS and len(outputs) == 1:
        ((name, array),) = outputs.items()
        return _tensor(form, name, array, meta, proto)
    if form == "tftensor":
        return _json_data({name: tensor_to_json(array) for name, array in outputs.items()}, meta, proto)
    return _json_data(dict(outputs), meta, proto)


def encode_batch(answers: list[dict[str, Any]], meta: dict[str, Any], proto: bool) -> Any:
    """The answers to an S3 event, one per created object in record order, each naming its image_uri."""
    return _json_data(answers, meta, proto)


def _json_data(body: Any, meta: dict[str, Any], proto: bool) -> Any:
    if not proto:
        return {"jsonData": body, "meta": meta}
    if isinstance(body, Mapping):
        body = {k: v.tolist() if isinstance(v, np.ndarray) else v for k, v in body.items()}
    message = prediction_pb2.SeldonMessage(jsonData=json_format.ParseDict(body, struct_pb2.Value()))
    json_format.ParseDict({"meta": meta}, message)
    return message


def _tensor(form: str, name: str, array: np.ndarray, meta: dict[str, Any], proto: bool) -> Any:
    if proto:
        message = prediction_pb2.SeldonMessage()
        message.data.names.append(name)
        if form == "tftensor":
            message.data.tftensor.CopyFrom(tensor_to_tf(array))
        elif form == "tensor":
            message.data.tensor.shape.extend(array.shape)
            message.data.tensor.values.extend(array.ravel().tolist())
        else:
            json_format.ParseDict(array.tolist(), message.data.ndarray)
        json_format.ParseDict({"meta": meta}, message)
        return message
    if form == "tftensor":
        data: dict[str, Any] = {"tftensor": tensor_to_json(array)}
    elif form == "tensor":
        data = {"tensor": {"shape": list(array.shape), "values": array.ravel()}}
    else:
        data = {"ndarray": array}
    return {"data": {"names": [name], **data}, "meta": meta}
