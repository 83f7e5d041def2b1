"""Encoded image (JPEG, PNG, BMP) -> the model's input tensor: decode, RGB, resize, scale, quantize."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .errors import BadRequest, ModelLoadError
from .runtime import TensorSpec
from .settings import Settings

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


def decode_image(data: bytes) -> np.ndarray:
    """BGR uint8 pixels of an encoded image, or a BadRequest saying what arrived."""
    if not data:
        raise BadRequest("binData is empty: expected an encoded image (JPEG, PNG or BMP)")
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        head = data[:8].hex(" ")
        raise BadRequest(
            f"binData is not a decodable image ({len(data)} bytes starting {head}): expected JPEG, PNG or BMP"
        )
    return image


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
            multiplier, offset = 1.0 / std, -mean / std
        else:
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
