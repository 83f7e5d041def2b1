"""The tensor datatypes, written once: numpy, the Open Inference Protocol's name, TensorFlow's enum (Seldon's
tftensor), and where each travels in the protocols' typed value lists. Every lookup below derives from TABLE.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from seldon_core.proto.tensorflow.core.framework import types_pb2


@dataclass(frozen=True)
class DataType:
    name: str  # the Open Inference Protocol's (KServe v2, Triton) name, which metadata shows too
    numpy: np.dtype  # object for BYTES
    tf: int | None  # TensorFlow's DataType enum (Seldon's tftensor); None: not carried there
    tf_values: str | None  # TensorProto's typed value list when tensor_content is empty
    contents: str | None  # OIP gRPC InferTensorContents' typed value list; None: raw_input_contents only

    @property
    def wire(self) -> np.dtype:
        """Little-endian, as the binary extension and raw_*_contents carry it whatever the host."""
        return self.numpy.newbyteorder("<")


TABLE = (
    DataType("BOOL", np.dtype(np.bool_), types_pb2.DT_BOOL, "bool_val", "bool_contents"),
    DataType("UINT8", np.dtype(np.uint8), types_pb2.DT_UINT8, "int_val", "uint_contents"),
    DataType("UINT16", np.dtype(np.uint16), types_pb2.DT_UINT16, "int_val", "uint_contents"),
    DataType("UINT32", np.dtype(np.uint32), types_pb2.DT_UINT32, "uint32_val", "uint_contents"),
    DataType("UINT64", np.dtype(np.uint64), types_pb2.DT_UINT64, "uint64_val", "uint64_contents"),
    DataType("INT8", np.dtype(np.int8), types_pb2.DT_INT8, "int_val", "int_contents"),
    DataType("INT16", np.dtype(np.int16), types_pb2.DT_INT16, "int_val", "int_contents"),
    DataType("INT32", np.dtype(np.int32), types_pb2.DT_INT32, "int_val", "int_contents"),
    DataType("INT64", np.dtype(np.int64), types_pb2.DT_INT64, "int64_val", "int64_contents"),
    DataType("FP16", np.dtype(np.float16), types_pb2.DT_HALF, "half_val", None),
    DataType("FP32", np.dtype(np.float32), types_pb2.DT_FLOAT, "float_val", "fp32_contents"),
    DataType("FP64", np.dtype(np.float64), types_pb2.DT_DOUBLE, "double_val", "fp64_contents"),
    DataType("BYTES", np.dtype(object), None, None, "bytes_contents"),
)
BY_NAME = {t.name: t for t in TABLE}
BY_NUMPY = {t.numpy: t for t in TABLE}
BY_TF = {t.tf: t for t in TABLE if t.tf is not None}
NAMES = tuple(BY_NAME)


def name_of(dtype: np.dtype) -> str:
    """The OIP name of a numpy dtype (BYTES for anything the table does not hold)."""
    found = BY_NUMPY.get(np.dtype(dtype))
    return found.name if found else "BYTES"
