"""Hostile images: bombs whose headers declare huge sizes, a few hundred bytes to a few tens of KB each
(bench/image_bombs.py measures what each costs a server). The encoders never decode what they build.
"""

from __future__ import annotations

import struct
import zlib


def jpeg_bomb(width: int, height: int) -> bytes:
    """A tiny (about 330 bytes) baseline JPEG whose frame header declares width x height pixels.

    An 8 x 8 grey JPEG with its SOF0 dimensions rewritten: a decoder that trusts the header allocates
    width x height pixels and fills them in from the few bytes of scan data.
    """
    import cv2
    import numpy as np

    ok, encoded = cv2.imencode(".jpg", np.zeros((8, 8), np.uint8), [cv2.IMWRITE_JPEG_QUALITY, 10])
    assert ok
    data = bytearray(encoded.tobytes())
    i = 2
    while i + 4 <= len(data):
        marker, length = data[i + 1], int.from_bytes(data[i + 2 : i + 4], "big")
        if marker == 0xC0:  # SOF0: length(2) precision(1) height(2) width(2)
            data[i + 5 : i + 9] = struct.pack(">HH", height, width)
            return bytes(data)
        i += 2 + length
    raise AssertionError("no SOF0 in OpenCV's JPEG")


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def png_bomb(width: int, height: int) -> bytes:
    """A real, complete PNG of width x height black pixels (1-bit grey, so a few tens of KB compressed):
    every byte of it is valid, and decoding it as colour takes width x height x 3 bytes."""
    row = b"\x00" * (1 + (width + 7) // 8)  # filter byte 0 + the packed bits of one row
    compressor = zlib.compressobj(9)
    chunks = [compressor.compress(row * 1000) for _ in range(height // 1000)]
    chunks.append(compressor.compress(row * (height % 1000)))
    chunks.append(compressor.flush())
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", b"".join(chunks))
        + _png_chunk(b"IEND", b"")
    )


def bmp_header(width: int, height: int, bits: int = 24) -> bytes:
    """The 54-byte header of a BMP (BITMAPINFOHEADER) declaring width x height, followed by one row of pixels
    (a negative height is a top-down bitmap)."""
    row = ((width * bits + 31) // 32) * 4
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, bits, 0, 0, 2835, 2835, 0, 0)
    return b"BM" + struct.pack("<IHHI", 14 + 40 + row * abs(height), 0, 0, 54) + info + b"\x00" * min(row, 1 << 16)
