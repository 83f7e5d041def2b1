"""Tensors as the Open Inference Protocol carries them: shapes and datatypes checked, BYTES in their
length-prefixed binary form, raw little-endian data (binary extension, raw_*_contents) and typed values (JSON
`data`, gRPC `contents`); outputs written back, and the bytes an output takes as JSON."""

from __future__ import annotations

import binascii
import math
import struct
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pybase64

from ...core.model import as_input
from ...datatypes import BY_NAME, NAMES
from ...errors import BadRequest
from ...runtimes.base import TensorSpec
from ..v1.codecs import numbers


def elements_of(shape: Sequence[int]) -> int:
    """Elements of a tensor of `shape`, exactly (Python integers: no overflow, however large the dimensions)."""
    return math.prod(shape)


def shape_of(value: Any, where: str) -> list[int]:
    if not isinstance(value, (list, tuple)) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in value
    ):
        raise BadRequest(f"{where}: shape must be a list of non-negative integers, got {value!r}")
    return list(value)


def datatype_of(value: Any, where: str) -> str:
    if value not in BY_NAME:
        raise BadRequest(f"{where}: datatype {value!r} is not an OIP datatype: expected one of {', '.join(NAMES)}")
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
    count = elements_of(shape)
    if datatype == "BYTES":
        return bytes_elements(raw, count, where)
    dtype = BY_NAME[datatype].wire
    if len(raw) != count * dtype.itemsize:
        raise BadRequest(
            f"{where}: {len(raw)} bytes of data, but shape {shape} of {datatype} needs {count * dtype.itemsize}"
        )
    return np.frombuffer(raw, dtype).astype(BY_NAME[datatype].numpy, copy=False).reshape(shape)


def tensor_from_values(datatype: str, shape: list[int], values: Any, where: str) -> np.ndarray | list[bytes]:
    """A tensor from typed values (JSON `data`, gRPC `contents`), flat or nested, row-major."""
    count = elements_of(shape)
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
    array = numbers(values, f"{where}: data ({datatype})")
    if array.size != count:
        raise BadRequest(f"{where}: {array.size} values but shape {shape} needs {count}")
    spec = TensorSpec(where, BY_NAME[datatype].numpy, tuple(shape))
    try:
        return as_input(spec, array.reshape(shape), "data")
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
    return np.ascontiguousarray(value, dtype=BY_NAME[datatype].wire).tobytes()


CLASS_STRING_BYTES = 32  # "score:index:" of one classification string, at most (e.g. "0.996094:1000:")


def classes_of(spec: TensorSpec) -> int | None:
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
