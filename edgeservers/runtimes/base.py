"""The one seam between the servers and an inference runtime (TFLite or OpenVINO).

Everything else in the package works on `TensorSpec` and numpy arrays and knows nothing
of the runtime behind them.
"""

from __future__ import annotations

import queue
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, ClassVar, Generic, Self, TypeVar

import numpy as np

from ..datatypes import name_of
from ..errors import ModelLoadError


@dataclass(frozen=True)
class Quantization:
    """Affine quantization of a tensor: real = scale * (q - zero_point)."""

    scale: float
    zero_point: int

    def dequantize(self, values: np.ndarray) -> np.ndarray:
        return (values.astype(np.float32) - self.zero_point) * np.float32(self.scale)

    def quantize(self, real: np.ndarray, dtype: np.dtype) -> np.ndarray:
        info = np.iinfo(dtype)
        q = np.rint(real / self.scale + self.zero_point)
        return np.clip(q, info.min, info.max).astype(dtype)


@dataclass(frozen=True)
class TensorSpec:
    """What a model says of one input or output tensor."""

    name: str
    dtype: np.dtype
    shape: tuple[int, ...]  # -1 for a dynamic dimension
    quantization: Quantization | None = None
    layout: str | None = None  # "NCHW" or "NHWC" when the model itself says so (OpenVINO rt_info)

    @property
    def datatype(self) -> str:
        """Its Open Inference Protocol name, which metadata shows."""
        return name_of(self.dtype)

    def describe(self) -> dict[str, Any]:
        """The tensor as Seldon's metadata endpoint shows it."""
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}


@dataclass(frozen=True)
class ModelSignature:
    """The model's tensors after the user's input/output selection."""

    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]


@dataclass(frozen=True)
class RuntimeOptions:
    """Knobs every runtime understands; a runtime with settings of its own subclasses this (e.g. OpenVINO's
    device). Field names are the parameters' names, so `from_settings` fills them."""

    num_threads: int
    pool_size: int
    inference_precision: str = "f32"

    @classmethod
    def from_settings(cls, settings: Any) -> Self:
        return cls(**{f.name: getattr(settings, f.name) for f in fields(cls)})


OptionsT = TypeVar("OptionsT", bound=RuntimeOptions)


class ModelRuntime(ABC, Generic[OptionsT]):
    """A loaded model: its tensors and a pool of inference slots that requests share.

    `inspect` is cheap and safe to call before the wrapper forks its workers; the
    constructor (run in each worker's `load()`) creates the pool. A runtime whose reading of the
    model costs as much as compiling it may keep what `inspect` read for the first constructor in
    the same process or in a worker forked from it (`release_inspected` drops it where none follows).
    """

    name: ClassVar[str]
    # File suffixes this runtime can load, in order of preference.
    model_suffixes: ClassVar[tuple[str, ...]]
    # The inference_precision values this runtime can honour.
    precisions: ClassVar[tuple[str, ...]]
    # Its options: OptionsT or a subclass with the runtime's own settings.
    options_class: ClassVar[type[RuntimeOptions]] = RuntimeOptions

    @classmethod
    @abstractmethod
    def inspect(cls, model_path: Path, options: OptionsT) -> tuple[list[TensorSpec], list[TensorSpec]]:
        """All input and output tensors of the model, without creating a pool."""

    @classmethod
    def release_inspected(cls) -> None:
        """Drop what `inspect` kept for the constructor, in a process that will not load the model."""

    @classmethod
    @abstractmethod
    def precision(cls, model_path: Path, options: OptionsT) -> str:
        """The precision float models will be computed in (f32, bf16, f16), as the runtime and device
        report it without compiling: metadata says it, and a precision the device lacks stops the server."""

    @classmethod
    def report(cls, model_path: Path, options: OptionsT) -> dict[str, str]:
        """What metadata's `custom` says of how this runtime runs the model beyond the shared settings (e.g.
        TFLite's delegate), as strings; known after `inspect`."""
        return {}

    @classmethod
    def info_metrics(cls, model_path: Path, options: OptionsT) -> list[dict]:
        """Seldon GAUGE metrics whose labels say how the model runs (metrics.info_gauge), for each worker to
        hand over once; known after `inspect`."""
        return []

    @classmethod
    def slot_threads(cls, options: OptionsT, cpus: int) -> tuple[int, ...]:
        """The threads of each slot, first to last (free slots are taken in this order): num_threads each."""
        return (options.num_threads,) * max(1, options.pool_size)

    def __init__(self, model_path: Path, options: OptionsT, signature: ModelSignature, cpus: int):
        self.signature = signature
        # (rank, slot): a request takes the first free slot, so one alone always gets the first
        self._slots: queue.PriorityQueue = queue.PriorityQueue()
        for rank, threads in enumerate(self.slot_threads(options, cpus)):
            self._slots.put((rank, self._new_slot(model_path, replace(options, num_threads=threads))))

    @abstractmethod
    def _new_slot(self, model_path: Path, options: OptionsT) -> Any:
        """One independent inference context (an interpreter, an infer request)."""

    @abstractmethod
    def _run(self, slot: Any, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One inference on `slot`; returns the selected outputs by name (arrays owned by the caller)."""

    @contextmanager
    def _slot(self) -> Iterator[Any]:
        rank, slot = self._slots.get()
        try:
            yield slot
        finally:
            self._slots.put((rank, slot))

    def infer(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run one inference; waits for a free slot when all are busy (thread-safe)."""
        with self._slot() as slot:
            return self._run(slot, inputs)


def select(tensors: Sequence[TensorSpec], wanted: Sequence[str], kind: str) -> tuple[TensorSpec, ...]:
    """The tensors named in `wanted` (all when empty), or a ModelLoadError listing the model's names."""
    if not wanted:
        return tuple(tensors)
    by_name = {t.name: t for t in tensors}
    unknown = [name for name in wanted if name not in by_name]
    if unknown:
        raise ModelLoadError(f"unknown {kind} tensor name(s) {', '.join(unknown)}; the model has: {', '.join(by_name)}")
    return tuple(by_name[name] for name in wanted)
