"""JSON bodies read within limits (edgeservers/protocols/json_limits.py)."""

from __future__ import annotations

import pytest

_B64 = "QUJD" * 20_000  # 80 kB of base64: above one_string_member's floor


@pytest.mark.parametrize(
    "body, split",
    [
        ('{"binData":"%s"}', True),  # compact, as clients write it
        ('{"binData": "%s"}', True),  # Python's json.dumps
        (' \r\n\t{ "strData" :\n"%s" } \n', True),  # whitespace anywhere JSON allows it
        ('{"binData": "%s=="}', True),
        ('{"binData": "%s", "meta": {"tags": {"a": "b"}}}', False),  # two members
        ('{"meta": {"x": "%s"}}', False),  # a nested object
        ('{"binData": "%s\\n"}', False),  # an escape: the parser decodes it
        ('{"bin\\"Data": "%s"}', False),  # an escaped quote in the key
        ('{"binData": "%s\u00e9"}', False),  # non-ASCII
        ('{"binData": "%s\t"}', False),  # a raw control character: not valid JSON
        ('{"binData": "%s}', False),  # unterminated string
        ('{"binData": "%s"', False),  # no closing brace
        ('{"binData" "%s"}', False),  # no colon
        ('{"binData": "%s"} x', False),  # trailing text
        ('["%s"]', False),
        ('"%s"', False),
    ],
)
def test_a_one_string_body_is_split_exactly_as_orjson_parses_it(body, split):
    """json_limits.one_string_member takes the JSON parser's place for a camera JPEG's binData body:
    it must give what orjson gives, or leave the body to orjson (which then parses or refuses it)."""
    import orjson

    from edgeservers.protocols.json_limits import one_string_member

    data = (body % _B64).encode()
    result = one_string_member(data)
    assert (result is not None) == split
    if split:
        assert result == orjson.loads(data)


def test_small_bodies_are_left_to_the_parser():
    from edgeservers.protocols.json_limits import one_string_member

    assert one_string_member(b'{"binData": "QUJD"}') is None  # orjson is as quick there
