"""Ground truth: the plain LiteRT interpreter on an input prepared independently of the server's own code."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import numpy as np

from tests.support.paths import IMAGES, tflite_file


@functools.cache
def plain_interpreter(model: Path) -> Any:
    """The runtime itself, with nothing of ours in between (one per model file; the tests call it in turn)."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(model))
    interpreter.allocate_tensors()
    return interpreter


def plain_outputs(model_dir: Path, tensor: np.ndarray) -> dict[str, np.ndarray]:
    interpreter = plain_interpreter(tflite_file(model_dir))
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], tensor)
    interpreter.invoke()
    return {d["name"]: interpreter.get_tensor(d["index"]) for d in interpreter.get_output_details()}


def plain_image_tensor(model_dir: Path, image: str, scale: float | None = None) -> np.ndarray:
    """Independent preprocessing for ground truth: OpenCV decode, RGB, bilinear resize; uint8 as is,
    float32 scaled by `scale`."""
    import cv2

    return plain_pixels_tensor(model_dir, cv2.imread(str(IMAGES / image)), scale)


def plain_pixels_tensor(model_dir: Path, bgr: np.ndarray, scale: float | None = None) -> np.ndarray:
    """plain_image_tensor's preprocessing of pixels already decoded (OpenCV's BGR)."""
    import cv2

    detail = plain_interpreter(tflite_file(model_dir)).get_input_details()[0]
    _, h, w, _ = detail["shape"]
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    pixels = cv2.resize(rgb, (int(w), int(h)), interpolation=cv2.INTER_LINEAR)[np.newaxis]
    return pixels.astype(np.float32) * scale if scale else pixels.astype(detail["dtype"])
