"""model_check_input: a known input every version of the model must answer before it serves, at start and before
an in-place update replaces the version serving (core/updates.py). A model that loads and runs on zeros can
still be useless (weights zeroed or scrambled, a wrong export); this catches the plainest of those."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ModelLoadError
from ..runtimes.base import ModelSignature
from .payload import IMAGE, NAMED, Payload
from .postprocess import Answer

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
TENSOR_SUFFIXES = (".npy", ".npz")  # .npy: the one input; .npz: one array per input name
FORM = "model_check_input"  # what messages about its tensors or image call it


@dataclass(frozen=True)
class CheckInput:
    """The file's payload, as a request would carry it."""

    path: Path
    payload: Payload

    def verify(self, signature: ModelSignature, outputs: Mapping[str, np.ndarray], answer: Answer | None) -> None:
        """A ModelLoadError saying what is wrong unless every output is there with its dtype and shape, holds no
        NaN or infinity, and the answer (when a post-processing applies) is not empty."""
        for spec in signature.outputs:
            array = outputs.get(spec.name)
            if array is None:
                raise self._failed(f"no output {spec.name}")
            if array.dtype != spec.dtype or len(array.shape) != len(spec.shape):
                raise self._failed(
                    f"output {spec.name} is {array.dtype.name} {list(array.shape)}, "
                    f"expected {spec.dtype.name} {list(spec.shape)}"
                )
            if any(d not in (s, -1) for s, d in zip(array.shape, spec.shape)):
                raise self._failed(f"output {spec.name} has shape {list(array.shape)}, expected {list(spec.shape)}")
            if array.dtype.kind == "f" and not np.isfinite(array).all():
                raise self._failed(f"output {spec.name} holds NaN or infinite values")
        empty = _empty(answer) if answer is not None else None
        if empty:
            raise self._failed(f"the answer is empty: {empty}")

    def _failed(self, what: str) -> ModelLoadError:
        return ModelLoadError(f"model_check_input {self.path}: {what}")


def _empty(answer: Answer) -> str | None:
    """How the answer says nothing (no class with a score above 0, no detection, no region), None when it says
    something."""
    body = answer.body
    if isinstance(body, dict):  # segmentation
        return None if body.get("regions") else "no region"
    if not body:
        return "nothing found"
    if answer.top_score is not None and answer.top_score <= 0:
        return "every class scores 0"
    return None


def read_check_input(path: str, model_dir: Path, takes_images: bool) -> CheckInput | None:
    """The parameter model_check_input read at start (relative paths: in the model's directory, then the
    working directory); None when it is not set. A ModelLoadError names what is wrong with it."""
    if not path:
        return None
    found = Path(path)
    if not found.is_absolute() and (model_dir / found).is_file():
        found = model_dir / found
    suffix = found.suffix.lower()
    if suffix not in IMAGE_SUFFIXES + TENSOR_SUFFIXES:
        raise ModelLoadError(
            f"parameter model_check_input={path!r}: expected an image ({', '.join(IMAGE_SUFFIXES)}) "
            f"or tensors ({', '.join(TENSOR_SUFFIXES)})"
        )
    if suffix in IMAGE_SUFFIXES and not takes_images:
        raise ModelLoadError(f"parameter model_check_input={path!r}: this model does not take images: give a .npy")
    try:
        if suffix in IMAGE_SUFFIXES:
            return CheckInput(found, Payload(IMAGE, image=found.read_bytes(), image_field=FORM))
        if suffix == ".npy":
            return CheckInput(found, Payload(FORM, tensors={None: np.load(found, allow_pickle=False)}))
        with np.load(found, allow_pickle=False) as named:
            return CheckInput(found, Payload(NAMED, tensors={name: named[name] for name in named.files}))
    except OSError as e:
        raise ModelLoadError(f"parameter model_check_input={path!r}: cannot read it: {e.strerror or e}") from None
    except ValueError as e:  # not a .npy / .npz numpy can read without pickles
        raise ModelLoadError(f"parameter model_check_input={path!r}: not a numpy file: {e}") from None
