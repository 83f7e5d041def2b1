"""Real models derived from a bundled classifier, for the in-place update tests and bench/model_updates.py: the same
tensors (names, shapes, quantization: what an update must keep), other answers.

The last layer of models/mobilenet_v2_quant is a 1x1 convolution with one row of weights (and one bias) per class.
Its weights and biases are found in the .tflite file by their bytes (read through the interpreter: no schema
needed) and rewritten in place:
- `swapped_classes(a, b)`: rows a and b exchanged: the model calls an `a` a `b` and the reverse, with the same score;
- `dead_classifier()`: every weight at its zero point and every bias 0: all classes score the same, which the
  uint8 softmax output rounds to 0 (a model that loads and runs, and answers nothing).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
MOBILENET_V2 = ROOT / "models" / "mobilenet_v2_quant"
MODEL_FILE = MOBILENET_V2 / "mobilenet_v2_1.0_224_quant.tflite"
LABELS = (MOBILENET_V2 / "labels.txt").read_text().splitlines()
CLASSES = len(LABELS)


def _classifier() -> tuple[bytearray, tuple[int, np.ndarray, int], tuple[int, np.ndarray]]:
    """The model's bytes, (offset, array, zero point) of the last layer's weights, (offset, array) of its biases."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(MODEL_FILE))
    details = interpreter.get_tensor_details()
    weights = next(d for d in details if len(d["shape"]) == 4 and d["shape"][0] == CLASSES)
    biases = next(d for d in details if list(d["shape"]) == [CLASSES] and d["dtype"] == np.int32)
    data = bytearray(MODEL_FILE.read_bytes())
    found = []
    for detail in (weights, biases):
        array = interpreter.get_tensor(detail["index"])
        offset = data.find(array.tobytes())
        assert offset > 0 and data.count(array.tobytes()) == 1, f"{detail['name']} not found once in {MODEL_FILE}"
        found.append((offset, array))
    (w_at, w), (b_at, b) = found
    return data, (w_at, w, int(weights["quantization"][1])), (b_at, b)


def _rewritten(weights: np.ndarray, biases: np.ndarray) -> bytes:
    data, (w_at, w, _), (b_at, b) = _classifier()
    data[w_at : w_at + w.nbytes] = weights.astype(w.dtype).tobytes()
    data[b_at : b_at + b.nbytes] = biases.astype(b.dtype).tobytes()
    return bytes(data)


def swapped_classes(a: str, b: str) -> bytes:
    """mobilenet_v2 with the classes whose labels start with `a` and `b` exchanged."""
    _, (_, w, _), (_, bias) = _classifier()
    i, j = (next(n for n, label in enumerate(LABELS) if label.split(",")[0] == name) for name in (a, b))
    w, bias = w.copy(), bias.copy()
    w[[i, j]], bias[[i, j]] = w[[j, i]], bias[[j, i]]
    return _rewritten(w, bias)


def dead_classifier() -> bytes:
    """mobilenet_v2 whose every class scores 0 (see the module's docstring)."""
    _, (_, w, zero_point), (_, bias) = _classifier()
    return _rewritten(np.full_like(w, zero_point), np.zeros_like(bias))
