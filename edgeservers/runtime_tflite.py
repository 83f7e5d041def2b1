"""TensorFlow Lite behind the runtime seam: `ai_edge_litert` where installed, else `tflite_runtime` (armv7)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np

from .errors import ModelLoadError
from .runtime import ModelRuntime, Quantization, RuntimeOptions, TensorSpec

try:  # amd64, arm64
    from ai_edge_litert.interpreter import Interpreter
except ImportError:  # armv7: LiteRT publishes no 32-bit ARM wheel
    from tflite_runtime.interpreter import Interpreter


def _spec(detail: Mapping[str, Any]) -> TensorSpec:
    scale, zero_point = detail["quantization"]
    quantization = Quantization(float(scale), int(zero_point)) if scale else None
    return TensorSpec(
        name=detail["name"],
        dtype=np.dtype(detail["dtype"]),
        shape=tuple(int(d) for d in detail["shape"]),
        quantization=quantization,
    )


def _interpreter(model_path: Path, num_threads: int) -> Interpreter:
    try:
        return Interpreter(model_path=str(model_path), num_threads=num_threads)
    except (ValueError, RuntimeError) as e:
        raise ModelLoadError(f"TFLite cannot read {model_path}: {e}") from None


class TFLiteRuntime(ModelRuntime):
    """A pool of TFLite interpreters: one per inference that may run at once (an interpreter is not thread-safe)."""

    name = "tflite"
    model_suffixes = (".tflite",)

    @classmethod
    def inspect(cls, model_path: Path, options: RuntimeOptions) -> tuple[list[TensorSpec], list[TensorSpec]]:
        interpreter = _interpreter(model_path, num_threads=1)  # one thread: nothing left running before a fork
        return (
            [_spec(d) for d in interpreter.get_input_details()],
            [_spec(d) for d in interpreter.get_output_details()],
        )

    def _new_slot(self, model_path: Path, options: RuntimeOptions) -> tuple[Interpreter, dict[str, int], dict[str, int]]:
        interpreter = _interpreter(model_path, num_threads=options.num_threads)
        interpreter.allocate_tensors()
        inputs = {d["name"]: d["index"] for d in interpreter.get_input_details()}
        outputs = {d["name"]: d["index"] for d in interpreter.get_output_details()}
        return interpreter, inputs, outputs

    def _run(self, slot: Any, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        interpreter, input_index, output_index = slot
        for name, value in inputs.items():
            interpreter.set_tensor(input_index[name], value)
        interpreter.invoke()
        return {spec.name: interpreter.get_tensor(output_index[spec.name]) for spec in self.signature.outputs}
