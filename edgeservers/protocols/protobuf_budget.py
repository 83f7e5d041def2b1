"""Count what a protobuf message would parse into, before parsing it, and refuse it past a budget.

seldon-core 1.17.1 pins protobuf 3.20, which has no compiled extension for Python 3.11: messages are
parsed in pure Python, where every element of a repeated field becomes a Python object. A 16 MB message
of one-byte varints parses into 16 million ints (seconds of the thread, hundreds of MB). `elements`
walks the wire format with the message's descriptor instead and counts what the parse would create:
packed numbers are counted from their bytes at once, every other record is one step, and the walk stops
as soon as the count passes the budget, so refusing costs at most `budget` steps.
"""

from __future__ import annotations

import numpy as np
from google.protobuf.descriptor import Descriptor, FieldDescriptor

MAX_DEPTH = 64  # nested messages (google.protobuf.Value lists in Seldon's ndarray); protobuf's own limit is 100

_VARINT, _FIXED64, _LENGTH, _FIXED32 = 0, 1, 2, 5
_FIXED32_TYPES = {FieldDescriptor.TYPE_FIXED32, FieldDescriptor.TYPE_SFIXED32, FieldDescriptor.TYPE_FLOAT}
_FIXED64_TYPES = {FieldDescriptor.TYPE_FIXED64, FieldDescriptor.TYPE_SFIXED64, FieldDescriptor.TYPE_DOUBLE}
_SINGLE_TYPES = {FieldDescriptor.TYPE_STRING, FieldDescriptor.TYPE_BYTES}


class OverBudget(Exception):
    """The message holds more elements than the budget (`elements` says at least how many)."""

    def __init__(self, elements: int):
        super().__init__(elements)
        self.elements = elements


class Malformed(Exception):
    """The bytes are not a message of this type (protobuf's own parse would fail too)."""


def elements(data: bytes | memoryview, descriptor: Descriptor, budget: int) -> int:
    """Scalars, strings and messages `data` parses into as a `descriptor` message; OverBudget past `budget`."""
    return _Walk(memoryview(data), budget).message(0, len(data), descriptor, 0)


class _Walk:
    def __init__(self, data: memoryview, budget: int):
        self.data, self.budget, self.count = data, budget, 0

    def add(self, n: int) -> None:
        self.count += n
        if self.count > self.budget:
            raise OverBudget(self.count)

    def varint(self, at: int, end: int) -> tuple[int, int]:
        value, shift = 0, 0
        while at < end and shift < 64:
            byte = self.data[at]
            value |= (byte & 0x7F) << shift
            at += 1
            if byte < 0x80:
                return value, at
            shift += 7
        raise Malformed("a varint runs past its message")

    def message(self, at: int, end: int, descriptor: Descriptor, depth: int) -> int:
        if depth > MAX_DEPTH:
            raise Malformed(f"messages nested deeper than {MAX_DEPTH}")
        fields = descriptor.fields_by_number
        while at < end:
            tag, at = self.varint(at, end)
            kind, field = tag & 7, fields.get(tag >> 3)
            if kind == _VARINT:
                _, at = self.varint(at, end)
                self.add(1)
            elif kind in (_FIXED64, _FIXED32):
                at += 8 if kind == _FIXED64 else 4
                self.add(1)
            elif kind == _LENGTH:
                size, at = self.varint(at, end)
                if at + size > end:
                    raise Malformed("a field runs past its message")
                self.length_delimited(at, at + size, field, depth)
                at += size
            else:  # groups (3, 4) and invalid wire types: no field of these services has them
                raise Malformed(f"wire type {kind}")
        if at != end:
            raise Malformed("a field runs past its message")
        return self.count

    def length_delimited(self, start: int, end: int, field: FieldDescriptor | None, depth: int) -> None:
        if field is None or field.type in _SINGLE_TYPES:  # an unknown field is kept as one bytes object
            self.add(1)
        elif field.type == FieldDescriptor.TYPE_MESSAGE:
            self.add(1)
            self.message(start, end, field.message_type, depth + 1)
        elif field.type in _FIXED32_TYPES:  # packed numbers
            self.add((end - start) // 4)
        elif field.type in _FIXED64_TYPES:
            self.add((end - start) // 8)
        else:  # packed varints: one per byte below 0x80
            self.add(int(np.count_nonzero(np.frombuffer(self.data[start:end], np.uint8) < 0x80)))
