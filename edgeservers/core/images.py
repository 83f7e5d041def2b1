"""Encoded image (JPEG, PNG, BMP) -> the model's input tensor: decode, RGB, resize, scale, quantize."""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass

import cv2
import numpy as np

from ..errors import BadRequest, ModelLoadError, TooLarge
from ..runtimes.base import TensorSpec
from ..settings import Settings

# input_scale -> (multiplier, offset) applied to 0..255 pixels to get the model's real-valued input.
_AFFINE = {
    "0..1": (1.0 / 255.0, 0.0),
    "-1..1": (1.0 / 127.5, -1.0),
    "0..255": (1.0, 0.0),
}


@dataclass(frozen=True)
class ImageGeometry:
    """Where the image's pixels go in the input tensor."""

    layout: str  # "NHWC" or "NCHW"
    height: int
    width: int
    channels: int


# JPEG start-of-frame markers (baseline, extended, progressive, lossless; Huffman and arithmetic): they carry the size.
_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
# Markers without a length field: TEM, RST0..7 (SOI/EOI never precede a frame header).
_JPEG_STANDALONE = {0x01, *range(0xD0, 0xD8)}


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a JPEG's frame header (SOFn), walking the marker segments after SOI."""
    i = 2
    while i + 4 <= len(data):
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in _JPEG_STANDALONE:
            i += 2
            continue
        if marker == 0xDA:  # start of scan before any frame header
            return None
        length = int.from_bytes(data[i + 2 : i + 4], "big")
        if marker in _JPEG_SOF:
            if length < 7 or i + 9 > len(data):
                return None
            height, width = struct.unpack(">HH", data[i + 5 : i + 9])
            return (width, height) if width and height else None
        if length < 2:
            return None
        i += 2 + length
    return None


def image_header(data: bytes) -> tuple[str, int, int] | None:
    """(format, width, height) read from an encoded JPEG, PNG or BMP's header without decoding a pixel;
    None for anything else (OpenCV then decides, under OPENCV_IO_MAX_IMAGE_PIXELS)."""
    if data[:2] == b"\xff\xd8":
        size = _jpeg_size(data)
        return ("JPEG", *size) if size else None
    if data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR" and len(data) >= 24:
        width, height = struct.unpack(">II", data[16:24])
        return "PNG", width, height
    if data[:2] == b"BM" and len(data) >= 26:
        (header_size,) = struct.unpack("<I", data[14:18])
        if header_size == 12:  # BITMAPCOREHEADER: 16-bit sizes
            width, height = struct.unpack("<HH", data[18:22])
            return "BMP", width, height
        if header_size >= 40:  # BITMAPINFOHEADER and later: signed 32-bit, negative height = top-down
            width, height = struct.unpack("<ii", data[18:26])
            return "BMP", abs(width), abs(height)
    return None


def opencv_max_pixels() -> int:
    """OpenCV's own cap on decoded pixels (OPENCV_IO_MAX_IMAGE_PIXELS, read when cv2 was imported; set in
    edgeservers/__init__.py): the second line of defence, for formats whose header this module does not read."""
    try:
        return int(os.environ.get("OPENCV_IO_MAX_IMAGE_PIXELS", "")) or (1 << 30)
    except ValueError:
        return 1 << 30


def check_opencv_cap(max_pixels: int) -> None:
    """A ModelLoadError when max_image_pixels allows images OpenCV would refuse anyway."""
    if max_pixels > opencv_max_pixels():
        raise ModelLoadError(
            f"parameter max_image_pixels={max_pixels} exceeds OpenCV's own limit, the environment variable "
            f"OPENCV_IO_MAX_IMAGE_PIXELS={opencv_max_pixels()}: raise that too"
        )


def check_image_size(data: bytes, max_pixels: int, field: str = "binData") -> tuple[str, int, int] | None:
    """TooLarge (413) when the image's header declares more than max_pixels pixels: before any decoding.
    Returns the header's (format, width, height) when it could be read."""
    header = image_header(data)
    if header is None:
        return None
    kind, width, height = header
    if width * height > max_pixels:
        raise TooLarge(
            f"{field} is a {width} x {height} {kind} ({width * height:,} pixels); max_image_pixels is {max_pixels:,}"
        )
    return header


# JPEG decoding at 1/8, 1/4 or 1/2 scale, in the DCT domain: a fraction of a full decode's time and memory.
_REDUCED = ((8, cv2.IMREAD_REDUCED_COLOR_8), (4, cv2.IMREAD_REDUCED_COLOR_4), (2, cv2.IMREAD_REDUCED_COLOR_2))


def _decode_flag(header: tuple[str, int, int] | None, fit: tuple[int, int] | None) -> int:
    """The OpenCV read flag: a reduced scale for a JPEG still at least `fit` (height, width) once reduced,
    i.e. at least twice the model's input in both dimensions; else a full decode."""
    if header is None or fit is None or header[0] != "JPEG":
        return cv2.IMREAD_COLOR
    _, width, height = header
    return next((flag for f, flag in _REDUCED if width // f >= fit[1] and height // f >= fit[0]), cv2.IMREAD_COLOR)


def decode_image(
    data: bytes, max_pixels: int | None = None, field: str = "binData", fit: tuple[int, int] | None = None
) -> tuple[np.ndarray, tuple[int, int]]:
    """BGR uint8 pixels of an encoded image and the image's own (height, width), or a BadRequest saying
    what arrived (TooLarge when its header declares more than `max_pixels` pixels: checked before anything
    is decoded). A JPEG at least twice `fit` (the model's input height and width) in both dimensions is
    decoded at reduced scale; boxes and masks still refer to the image's own size."""
    if not data:
        raise BadRequest(f"{field} is empty: expected an encoded image (JPEG, PNG or BMP)")
    header = check_image_size(data, max_pixels, field) if max_pixels is not None else image_header(data)
    head = data[:8].hex(" ")
    try:
        image = cv2.imdecode(np.frombuffer(data, np.uint8), _decode_flag(header, fit))
    except cv2.error as e:  # OpenCV's own checks (e.g. its pixel cap): never its internal text as a 500
        if "CV_IO_MAX_IMAGE_PIXELS" in str(e):
            raise TooLarge(
                f"{field} ({len(data)} bytes starting {head}) declares more than {opencv_max_pixels():,} pixels, "
                f"OpenCV's limit (OPENCV_IO_MAX_IMAGE_PIXELS; max_image_pixels is {max_pixels or 0:,})"
            ) from None
        raise BadRequest(
            f"{field} is not a decodable image ({len(data)} bytes starting {head}): expected JPEG, PNG or BMP"
        ) from None
    if image is None:
        raise BadRequest(
            f"{field} is not a decodable image ({len(data)} bytes starting {head}): expected JPEG, PNG or BMP"
        )
    height, width = (header[2], header[1]) if header is not None else image.shape[:2]
    return image, (height, width)


def geometry(spec: TensorSpec, layout: str) -> ImageGeometry:
    """H, W and C of a 4-D image input; NCHW when the layout parameter, else the model's own layout, says
    so, else when the shape shows it (C of 1 or 3 first)."""
    if len(spec.shape) != 4 or any(d <= 0 for d in spec.shape[1:]):
        raise ModelLoadError(
            f"input {spec.name} has shape {list(spec.shape)}: image payloads need a fixed 4-D image input "
            f"(NHWC or NCHW); send tensors instead"
        )
    _, d1, d2, d3 = spec.shape
    if layout == "auto" and spec.layout:
        layout = spec.layout
    if layout == "auto":
        layout = "NCHW" if d1 in (1, 3) and d3 not in (1, 3) else "NHWC"
    h, w, c = (d2, d3, d1) if layout == "NCHW" else (d1, d2, d3)
    if c not in (1, 3):
        raise ModelLoadError(f"input {spec.name} has {c} channels in {layout}: image payloads need 1 or 3")
    return ImageGeometry(layout, h, w, c)


class ImagePreprocessor:
    """Turns decoded pixels into one input tensor, as the model's dtype and quantization require.

    Quantized (uint8/int8) inputs: with input_scale=auto, pixels 0..255 span the tensor's quantized
    range (what quantized image models are trained on); with an explicit scale the real value is
    computed first and then quantized with the tensor's own scale and zero point. Float inputs:
    auto means 0..1.
    """

    def __init__(self, spec: TensorSpec, settings: Settings):
        self.spec = spec
        self.geometry = geometry(spec, settings.input_layout)
        self._bgr = settings.channel_order == "BGR"
        self._affine = self._choose_affine(spec, settings)

    @staticmethod
    def _choose_affine(spec: TensorSpec, settings: Settings) -> tuple[np.ndarray, np.ndarray] | None:
        """(multiplier, offset) per channel, or None to pass integer pixels through (quantized auto)."""
        scale = settings.input_scale
        if scale == "auto":
            if spec.dtype.kind in "ui":
                return None
            scale = "0..1"
        if scale == "mean_std":
            mean, std = (np.asarray(v, np.float32) for v in settings.mean_std)
            return (1.0 / std).astype(np.float32), (-mean / std).astype(np.float32)
        multiplier, offset = _AFFINE[scale]
        return np.asarray(multiplier, np.float32), np.asarray(offset, np.float32)

    def __call__(self, bgr: np.ndarray) -> np.ndarray:
        g = self.geometry
        pixels = cv2.resize(bgr, (g.width, g.height), interpolation=cv2.INTER_LINEAR)
        if g.channels == 1:
            pixels = cv2.cvtColor(pixels, cv2.COLOR_BGR2GRAY)[..., np.newaxis]
        elif not self._bgr:
            pixels = cv2.cvtColor(pixels, cv2.COLOR_BGR2RGB)
        tensor = self._to_dtype(pixels)
        if g.layout == "NCHW":
            tensor = tensor.transpose(2, 0, 1)
        return np.ascontiguousarray(tensor[np.newaxis])

    def _to_dtype(self, pixels: np.ndarray) -> np.ndarray:
        dtype = self.spec.dtype
        if self._affine is None:  # quantized input, auto scale: pixels already are the quantized values
            return pixels if dtype == np.uint8 else (pixels.astype(np.int16) - 128).astype(dtype)
        multiplier, offset = self._affine
        real = pixels.astype(np.float32) * multiplier + offset
        if dtype.kind == "f":
            return real.astype(dtype)
        if self.spec.quantization is not None:
            return self.spec.quantization.quantize(real, dtype)
        info = np.iinfo(dtype)
        return np.clip(np.rint(real), info.min, info.max).astype(dtype)
