"""The REST app's request (edgeservers/seldon/rest_app.py's LimitedRequest) parsing multipart bodies, in-process:
file parts stay in memory, every byte comes through, and the CVE-2023-46136 backport keeps a crafted part from
being searched again per chunk."""

from __future__ import annotations

import io

import pytest

from tests.support.payloads import multipart, wsgi_environ


def test_a_multipart_image_is_parsed_in_memory_not_spooled_to_tmp():
    """Werkzeug spools file parts past 500 KB to a temporary file in /tmp (a 64Mi emptyDir in the chart)."""
    from edgeservers.seldon.rest_app import LimitedRequest

    part = b"\xff" * (4 << 20)
    stream = LimitedRequest(wsgi_environ(*multipart({"binData": ("x.jpg", part)}))).files["binData"].stream
    assert isinstance(stream, io.BytesIO) and stream.getbuffer().nbytes == len(part)


def _multipart_request(data: bytes, boundary: str = "xyzboundary"):
    """The REST app's request of a form with one file part holding `data`, as the server's main process reads it."""
    from edgeservers import seldon
    from edgeservers.seldon.rest_app import LimitedRequest

    seldon.install()  # what the component does in the server's main process
    return LimitedRequest(wsgi_environ(*multipart({"binData": ("a", data)}, boundary)))


@pytest.mark.parametrize("size", [0, 1, 65535, 65536, 65537, 3 * 65536 + 7, 1 << 20])
def test_multipart_parts_come_through_intact(size):
    """The CVE-2023-46136 backport (edgeservers/seldon/rest_app.py) must not change what is parsed:
    random bytes (with CR, LF and boundary-like runs) across the parser's 64 KiB reads."""
    import random

    rng = random.Random(size)
    alphabet = [b"\r", b"\n", b"\r\n", b"-", b"--", b"--xyzbound", b"a", b"\x00"]
    data = b"".join(rng.choice(alphabet) for _ in range(size))[:size]
    assert _multipart_request(data).files["binData"].read() == data


def test_a_crafted_multipart_part_is_not_searched_again_per_chunk():
    """CVE-2023-46136: a part starting with CR and no CR/LF after it must not be kept whole and searched again
    after every 64 KiB read (quadratic CPU). Count the bytes the decoder re-examines, not the time."""
    from werkzeug.sansio.multipart import MultipartDecoder

    examined = []
    find = MultipartDecoder.next_event

    def counting(self):
        examined.append(len(self.buffer))
        return find(self)

    MultipartDecoder.next_event = counting
    try:
        data = b"\r" + b"A" * (8 << 20)
        assert _multipart_request(data).files["binData"].read() == data
    finally:
        MultipartDecoder.next_event = find
    assert sum(examined) < 4 * len(data), sum(examined)  # quadratic: ~64 GB re-examined for 8 MiB
