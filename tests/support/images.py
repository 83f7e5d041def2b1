"""Images made from the bundled photos: a camera frame of any size (the tests of reduced_decode, bench/decode.py)."""

from __future__ import annotations

import cv2

from tests.support.paths import IMAGES


def camera_jpeg(name: str, width: int, height: int) -> bytes:
    """A bundled photo as a camera would send it: width x height, JPEG quality 90."""
    pixels = cv2.resize(cv2.imread(str(IMAGES / name)), (width, height), interpolation=cv2.INTER_CUBIC)
    ok, jpeg = cv2.imencode(".jpg", pixels, [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    return jpeg.tobytes()
