"""TensorFlow Lite behind the runtime seam: `ai_edge_litert` where installed, else `tflite_runtime` (armv7)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ModelLoadError
from .runtime import ModelRuntime, ModelSignature, Quantization, RuntimeOptions, TensorSpec

try:  # amd64, arm64
    from ai_edge_litert.interpreter import Interpreter, OpResolverType
except ImportError:  # armv7: LiteRT publishes no 32-bit ARM wheel
    from tflite_runtime.interpreter import Interpreter, OpResolverType

# The XNNPACK delegate, on by default, computes a float model in fp16 by itself when the model's
# metadata allows it (this key, written by the converter's `_experimental_supported_accumulation_type`)
# and the CPU has native fp16 arithmetic (ARMv8.2 FP16, e.g. the Pi 5's Cortex-A76); otherwise in f32
# (tensorflow/lite/delegates/xnnpack/README.md, "Floating-Point (IEEE FP16) Operators"). A flatbuffer
# stores metadata names as plain bytes, so finding the key needs no schema (armv7's tflite_runtime has none).
_REDUCED_PRECISION_KEY = b"reduced_precision_support"


def _spec(detail: Mapping[str, Any]) -> TensorSpec:
    scale, zero_point = detail["quantization"]
    quantization = Quantization(float(scale), int(zero_point)) if scale else None
    return TensorSpec(
        name=detail["name"],
        dtype=np.dtype(detail["dtype"]),
        shape=tuple(int(d) for d in detail["shape"]),
        quantization=quantization,
    )


def _allows_fp16(model_path: Path) -> bool:
    """The model carries reduced_precision_support metadata (a stray match only costs XNNPACK's speed under f32)."""
    return _REDUCED_PRECISION_KEY in model_path.read_bytes()


def _cpu_has_fp16_arithmetic() -> bool:
    """ARMv8.2 FP16 arithmetic, as Linux reports it on arm64 (`asimdhp`)."""
    try:
        return "asimdhp" in Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False


def _interpreter(model_path: Path, num_threads: int, resolver: OpResolverType = OpResolverType.AUTO) -> Interpreter:
    try:
        return Interpreter(model_path=str(model_path), num_threads=num_threads, experimental_op_resolver_type=resolver)
    except (ValueError, RuntimeError) as e:
        raise ModelLoadError(f"TFLite cannot read {model_path}: {e}") from None


class TFLiteRuntime(ModelRuntime[RuntimeOptions]):
    """A pool of TFLite interpreters: one per inference that may run at once (an interpreter is not thread-safe)."""

    name = "tflite"
    model_suffixes = (".tflite",)
    # LiteRT's Python API cannot force XNNPACK into fp16 or bf16 (TFLITE_XNNPACK_DELEGATE_FLAG_FORCE_FP16 is
    # not exposed): `auto` lets XNNPACK choose, `f32` keeps a model that allows fp16 off XNNPACK.
    precisions = ("f32", "auto")

    @classmethod
    def inspect(cls, model_path: Path, options: RuntimeOptions) -> tuple[list[TensorSpec], list[TensorSpec]]:
        interpreter = _interpreter(model_path, num_threads=1)  # one thread: nothing left running before a fork
        return (
            [_spec(d) for d in interpreter.get_input_details()],
            [_spec(d) for d in interpreter.get_output_details()],
        )

    @classmethod
    def precision(cls, model_path: Path, options: RuntimeOptions) -> str:
        """f16 only where XNNPACK would choose it (`auto`, a model that allows it, a CPU with fp16 arithmetic)."""
        if options.inference_precision == "auto" and _allows_fp16(model_path) and _cpu_has_fp16_arithmetic():
            return "f16"
        return "f32"

    @classmethod
    def slot_threads(cls, options: RuntimeOptions, cpus: int) -> tuple[int, ...]:
        """num_threads for the first slot, which a request alone always gets; at most a share of the CPUs
        (cpus // pool_size) for each further one, so that a full pool runs about one thread per core.

        Each interpreter has its own XNNPACK thread pool, whose threads spin while they wait for work:
        two slots of every core on 2 cores (4 threads) answered 3 % fewer requests/s at 4 clients than
        2 + 1 threads, where one request alone is as fast (bench.defaults' model; one thread alone: 1.5x
        slower). Each slot is an interpreter of its own, so adding one for the lone request costs
        memory (10 MB for mobilenet_v2)."""
        share = max(1, cpus // max(1, options.pool_size))
        return (options.num_threads,) + (min(options.num_threads, share),) * (max(1, options.pool_size) - 1)

    def __init__(self, model_path: Path, options: RuntimeOptions, signature: ModelSignature, cpus: int):
        # f32 for a model that allows fp16: TFLite's own float kernels, without the XNNPACK delegate
        # (which would compute it in fp16 on ARM CPUs with fp16 arithmetic).
        f32_only = options.inference_precision == "f32" and _allows_fp16(model_path)
        self._resolver = OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES if f32_only else OpResolverType.AUTO
        super().__init__(model_path, options, signature, cpus)

    def _new_slot(
        self, model_path: Path, options: RuntimeOptions
    ) -> tuple[Interpreter, dict[str, int], dict[str, int]]:
        interpreter = _interpreter(model_path, options.num_threads, self._resolver)
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
