"""For the in-place update tests and bench/model_updates.py: real models derived from a bundled classifier (the same
tensors: names, shapes, quantization, what an update must keep; other answers), and clients that predict while
they are swapped.

The last layer of models/mobilenet_v2_quant is a 1x1 convolution with one row of weights (and one bias) per class.
Its weights and biases are found in the .tflite file by their bytes (read through the interpreter: no schema
needed) and rewritten in place:
- `swapped_classes(a, b)`: rows a and b exchanged: the model calls an `a` a `b` and the reverse, with the same score;
- `dead_classifier()`: every weight at its zero point and every bias 0: all classes score the same, which the
  uint8 softmax output rounds to 0 (a model that loads and runs, and answers nothing).
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import shutil
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import requests

from tests.support.harness import wait_for
from tests.support.paths import IMAGES, MOBILENET_V2, image_bytes, labels
from tests.support.services import make_tar

MODEL_FILE = MOBILENET_V2 / "mobilenet_v2_1.0_224_quant.tflite"
LABELS = labels(MOBILENET_V2)
CLASSES = len(LABELS)
PARROT = image_bytes("parrot.jpg")
PARROT_PATH = str(IMAGES / "parrot.jpg")  # for model_check_input
A = MODEL_FILE.read_bytes()  # the bundled model; B, its variant, is swapped_classes("macaw", "goldfish")
MACAW, GOLDFISH = "macaw", LABELS[2]  # parrot.jpg's answer from A, from B
CLIENTS = 8
HANG_BOUND = 60  # "does not hang": far above poll interval + load time on a busy 2-core machine, never a timing claim


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


def eventually(check: Callable[[], Any], what: str, timeout: float = HANG_BOUND) -> Any:
    """The first truthy value of `check()`, polled until `timeout`."""
    return wait_for(check, timeout, what, poll=0.05)


class Load:
    """`clients` threads sending parrot.jpg to `url` (a v1 REST predictions endpoint) as fast as the server
    answers; every answer kept as (started, ended, status, top label or the body), on the monotonic clock."""

    def __init__(self, url: str, clients: int = CLIENTS):
        self.url = url
        self.answers: list[tuple[float, float, int, str]] = []
        self._running: dict[int, float] = {}  # client thread -> when its request in flight started
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._client, daemon=True) for _ in range(clients)]

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(HANG_BOUND)

    def _client(self) -> None:
        body = {"binData": base64.b64encode(PARROT).decode()}
        with requests.Session() as session:
            while not self._stop.is_set():
                started = self._running[threading.get_ident()] = time.monotonic()
                try:
                    response = session.post(self.url, json=body, timeout=HANG_BOUND)
                    status = response.status_code
                    said = response.json()["jsonData"][0]["label"] if status == 200 else response.text[:300]
                except requests.RequestException as e:
                    status, said = 0, str(e)
                self.answers.append((started, time.monotonic(), status, said))

    def first(self, label: str, since: float) -> float:
        """When the first answer `label` to a request started after `since` came back."""

        def found() -> float | None:
            ends = [end for start, end, status, said in list(self.answers) if start > since and said == label]
            return min(ends) if ends else None

        return eventually(found, f"{label} answered after {since}")

    def settled(self, moment: float) -> bool:
        """Whether every request started before `moment` has been answered."""
        return all(started > moment for started in list(self._running.values()))

    def said(self, since: float, until: float) -> Counter:
        """What the requests started between `since` and `until` were answered."""
        return Counter(said for start, _, _, said in list(self.answers) if since < start < until)


def version_of(model: bytes) -> str:
    """The version the server names a model file by: its sha256 prefix."""
    return hashlib.sha256(model).hexdigest()[:12]


def top_label(server: Any) -> str:
    """What `server` (end to end or in-process) calls parrot.jpg."""
    return server.image("parrot.jpg")["jsonData"][0]["label"]


def put_model(directory: Path, model: bytes, name: str = "model.tflite") -> None:
    """Replace the model file as docs/kubernetes.md says to: written beside it, renamed over it."""
    staged = directory / f".{name}.new"
    staged.write_bytes(model)
    os.replace(staged, directory / name)


def model_tar(model: bytes) -> bytes:
    """The model and its labels as one .tar.gz, as the chart's examples ship a model."""
    return make_tar(
        [("mobilenet_v2.tflite", model), ("labels.txt", (MODEL_FILE.parent / "labels.txt").read_bytes())], "w:gz"
    )


def version_of_tar(model: bytes) -> str:
    """The version of a model tar's two files: the model cache's listing digest."""
    listing = "".join(
        f"{hashlib.sha256(data).hexdigest()}  {name}\n"
        for name, data in sorted(
            {"labels.txt": (MODEL_FILE.parent / "labels.txt").read_bytes(), "mobilenet_v2.tflite": model}.items()
        )
    )
    return hashlib.sha256(listing.encode()).hexdigest()[:12]


def model_dir(root: Path, model: bytes = A) -> Path:
    root.mkdir()
    shutil.copy(MODEL_FILE.parent / "labels.txt", root / "labels.txt")
    put_model(root, model)
    return root


def failures(prometheus: str) -> float:
    """edgeservers_model_update_failures_total, summed over the workers."""
    lines = [line for line in prometheus.splitlines() if line.startswith("edgeservers_model_update_failures_total{")]
    return sum(float(line.split()[-1]) for line in lines)


def model_info(prometheus: str) -> dict[tuple[str, str], float]:
    """{(worker_id, version): value} of edgeservers_model_info."""
    found = {}
    for line in prometheus.splitlines():
        if line.startswith("edgeservers_model_info{"):
            worker = re.search(r'worker_id="(\d+)"', line)
            version = re.search(r'[{,]version="(\w*)"', line)
            assert worker and version, line
            found[(worker.group(1), version.group(1))] = float(line.split()[-1])
    return found
