"""The v1 protocol's tensor codecs (edgeservers/protocols/v1/codecs.py)."""

from __future__ import annotations

import numpy as np
from seldon_core.proto.tensorflow.core.framework import tensor_pb2, types_pb2

from edgeservers.protocols.v1.codecs import tensor_from_tf, tensor_to_tf


def test_tftensor_value_lists_and_the_single_value_shorthand():
    proto = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, float_val=[1.5])
    for size in (2, 3):
        proto.tensor_shape.dim.add(size=size)
    np.testing.assert_array_equal(tensor_from_tf(proto), np.full((2, 3), 1.5, np.float32))
    array = np.arange(6, dtype=np.int8).reshape(1, 6)
    np.testing.assert_array_equal(tensor_from_tf(tensor_to_tf(array)), array)
