"""JSON bodies checked before they are parsed: the values they hold, counted by their commas, against what the
model's inputs could use; and a camera JPEG's one-member body split without a parser at all.

Every JSON the server parses goes through `check_values` first: a v1 body or form field, an Open Inference
Protocol body or its binary extension's header, a CloudEvent's data_base64. A parser holds every value it
reads (a 16 MB body of `0,` is eight million Python objects); counting commas costs 0.1 ms per MB.
"""

from __future__ import annotations

import numpy as np

from ..errors import TooLarge

SLACK = 4096  # values beyond twice the model's input elements: names, shapes, parameters, meta
V1_HINT = "send the tensor as tftensor or the image as binData"
OIP_HINT = "send tensors as binary data (Inference-Header-Content-Length) or the image as one BYTES element"


def values_limit(input_elements: int | None) -> int | None:
    """The JSON values a request may hold: twice the model's input elements plus SLACK (None: no bound, for a
    model with a dynamic dimension, where only max_request_bytes applies)."""
    return None if input_elements is None else 2 * input_elements + SLACK


def count_values(text: bytes | str) -> int:
    """An upper bound of the values in JSON `text`: its commas, plus one."""
    if isinstance(text, bytes):  # numpy compares 16-32 bytes at a time: 0.08 ms for 0.8 MB, bytes.count 0.3 ms
        return int(np.count_nonzero(np.frombuffer(text, np.uint8) == ord(","))) + 1
    return text.count(",") + 1


def check_count(count: int, limit: int | None, where: str, hint: str = V1_HINT) -> None:
    """TooLarge (413) when `count` values exceed `limit`; the message names `where` and what to send instead."""
    if limit is not None and count > limit:
        raise TooLarge(
            f"{where} holds about {count} JSON values (counted by commas), more than {limit}: twice the model's "
            f"input size plus {SLACK} (set by the model, no parameter); {hint}",
            "TOO_MANY_VALUES",
        )


def check_values(text: bytes | str, limit: int | None, where: str, hint: str = V1_HINT) -> None:
    check_count(count_values(text), limit, where, hint)


_SPACE = frozenset(b" \t\r\n")
ONE_STRING_MIN_BYTES = 64 << 10  # below this orjson is as quick


def one_string_member(body: bytes) -> dict[str, str] | None:
    """`{"<key>": "<string>"}` split without a parser, when the string holds no escape and only printable
    ASCII (what base64 is); None for any other body, which the caller parses.

    The body of a camera JPEG sent as JSON binData is one such member: orjson would reserve a parse buffer
    of 12 times the body and validate every byte under Python's lock, where finding the quotes, checking for
    control characters and decoding take a tenth of the time (docs/benchmarks.md). The result is what
    orjson.loads returns for the same body (tests/unit).
    """
    if len(body) < ONE_STRING_MIN_BYTES:
        return None
    try:
        start, end = _skip_space(body, 0, 1), _skip_space(body, len(body) - 1, -1)
        if body[start] != ord("{") or body[end] != ord("}"):
            return None
        start, end = _skip_space(body, start + 1, 1), _skip_space(body, end - 1, -1)
        key_end = body.find(b'"', start + 1, end)
        colon = _skip_space(body, key_end + 1, 1)
        value = _skip_space(body, colon + 1, 1)
    except IndexError:  # nothing but space
        return None
    if (body[start], body[end], body[colon], body[value]) != tuple(b'"":"') or not start < key_end < value < end:
        return None
    key, text = (start + 1, key_end), (value + 1, end)  # without their quotes
    if body.find(b'"', *text) >= 0 or any(
        body.find(b"\\", *part) >= 0 or _has_control(body, *part) for part in (key, text)
    ):
        return None
    view = memoryview(body)
    try:
        return {str(view[slice(*key)], "ascii"): str(view[slice(*text)], "ascii")}
    except UnicodeDecodeError:  # not ASCII: the parser decodes it
        return None


def _skip_space(body: bytes, at: int, step: int) -> int:
    """The first index from `at` (going by `step`) that is not JSON whitespace."""
    while body[at] in _SPACE:
        at += step
    return at


def _has_control(body: bytes, start: int, end: int) -> bool:
    """body[start:end] holds a control character (which a JSON string may not hold raw)."""
    codes = np.frombuffer(body, np.uint8, end - start, start)
    return bool(codes.size) and bool(codes.min() < 0x20)
