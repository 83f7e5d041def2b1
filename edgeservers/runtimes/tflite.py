"""TensorFlow Lite behind the runtime seam: `ai_edge_litert` where installed, else `tflite_runtime` (armv7)."""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ModelLoadError
from ..metrics import DELEGATE_INFO, info_gauge
from . import delegates
from .base import ModelRuntime, ModelSignature, Quantization, RuntimeOptions, TensorSpec
from .delegates import EDGETPU_LIBRARY, EDGETPU_OP, DelegateConfig, TrialResult, one_line

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
_UNRESOLVED_OP = re.compile(r"unresolved custom op: (.+?)\.(?:\s|$)")

log = logging.getLogger(__name__)


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


def _allocate(interpreter: Interpreter, model_path: Path, config: DelegateConfig | None = None) -> None:
    """allocate_tensors, where TFLite prepares every node: a custom op nothing runs fails here."""
    try:
        interpreter.allocate_tensors()
    except RuntimeError as e:
        raise _prepare_error(e, model_path, config) from None


def _prepare_error(error: RuntimeError, model_path: Path, config: DelegateConfig | None) -> ModelLoadError:
    op = _UNRESOLVED_OP.search(str(error))
    if op and config is not None:
        return ModelLoadError(
            f"{config.describe()} did not take custom op {op[1]} of {model_path.name}, which TFLite lacks"
        )
    if op and op[1] == EDGETPU_OP:
        return ModelLoadError(
            f"{model_path.name} is compiled for the Coral Edge TPU: its custom op {EDGETPU_OP} runs only on "
            f"libedgetpu's delegate; set parameter delegate={EDGETPU_LIBRARY}, with libedgetpu in the image or "
            "mounted from the host (docs/accelerators.md)"
        )
    if op:
        return ModelLoadError(
            f"{model_path.name} needs custom op {op[1]}, which this TFLite runtime lacks: set parameter delegate "
            "to a delegate library that runs it (docs/accelerators.md)"
        )
    with_delegate = f" with {config.describe()}" if config else ""
    return ModelLoadError(f"TFLite cannot prepare {model_path.name}{with_delegate}: {_message(error)}")


def _message(error: Exception) -> str:
    """TFLite's error text on one line: its reports run together ("...failed.Node number 3 ..."), and the
    note that it restored the graph after a failed delegate says nothing to the user."""
    text = one_line(str(error)).replace("Restored original execution plan after delegate application failure.", "")
    return re.sub(r"(?<=\S)(?=Node number \d)", " ", text).strip()


def _delegated(
    model_path: Path, num_threads: int, resolver: OpResolverType, config: DelegateConfig, options: Mapping[str, str]
) -> tuple[Interpreter, tuple[int, int] | None]:
    """An interpreter with one instance of the delegate, its tensors allocated, that has run one inference on
    zeros (a delegate may fail only then); and how many of the model's nodes the delegate took."""
    delegate = delegates.load(config, options)
    try:
        interpreter = Interpreter(
            model_path=str(model_path),
            num_threads=num_threads,
            experimental_op_resolver_type=resolver,
            experimental_delegates=[delegate],
        )
    except RuntimeError as e:  # the delegate's Prepare failed, or TFLite could not prepare what it left
        if _UNRESOLVED_OP.search(str(e)):
            raise _prepare_error(e, model_path, config) from None
        raise ModelLoadError(f"{config.describe()} cannot take {model_path.name}: {_message(e)}") from None
    nodes = delegates.delegated_nodes(interpreter)
    _allocate(interpreter, model_path, config)
    try:
        for detail in interpreter.get_input_details():
            interpreter.set_tensor(detail["index"], np.zeros(detail["shape"], detail["dtype"]))
        interpreter.invoke()
    except (ValueError, RuntimeError) as e:
        raise ModelLoadError(
            f"{config.describe()} failed in its first inference on {model_path.name}: {_message(e)}"
        ) from None
    return interpreter, nodes


@dataclass(frozen=True)
class TFLiteOptions(RuntimeOptions):
    """TFLite's own settings besides the shared ones: an external delegate (docs/accelerators.md)."""

    delegate: str = ""
    delegate_options: str = ""
    delegate_fallback: str = "fail"

    @property
    def delegate_config(self) -> DelegateConfig | None:
        return DelegateConfig.from_parameters(self.delegate, self.delegate_options, self.delegate_fallback)


# What the delegate's trial at start found, per model file and delegate: read by the constructor (in this
# process or in a worker forked from it) and by metadata.
_trials: dict[tuple[str, DelegateConfig], TrialResult] = {}


class TFLiteRuntime(ModelRuntime[TFLiteOptions]):
    """A pool of TFLite interpreters: one per inference that may run at once (an interpreter is not thread-safe),
    each with an instance of the delegate, if one is set and passed its trial at start."""

    name = "tflite"
    options_class = TFLiteOptions
    model_suffixes = (".tflite",)
    # LiteRT's Python API cannot force XNNPACK into fp16 or bf16 (TFLITE_XNNPACK_DELEGATE_FLAG_FORCE_FP16 is
    # not exposed): `auto` lets XNNPACK choose, `f32` keeps a model that allows fp16 off XNNPACK.
    precisions = ("f32", "auto")

    @classmethod
    def inspect(cls, model_path: Path, options: TFLiteOptions) -> tuple[list[TensorSpec], list[TensorSpec]]:
        """The tensors; whether the CPU can run every node (an Edge TPU model cannot); and with a delegate,
        its trial, after which it is used, or the server stops or runs on the CPU (delegate_fallback)."""
        # One thread and no default delegate: nothing left running before a fork.
        interpreter = _interpreter(model_path, 1, OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
        tensors = (
            [_spec(d) for d in interpreter.get_input_details()],
            [_spec(d) for d in interpreter.get_output_details()],
        )
        config = options.delegate_config
        cpu_problem = None
        try:
            interpreter.allocate_tensors()
        except RuntimeError as e:
            if config is None:
                raise _prepare_error(e, model_path, None) from None
            op = _UNRESOLVED_OP.search(str(e))
            cpu_problem = f"it needs custom op {op[1]}" if op else _message(e)
        if config is not None:
            cls._try_delegate(model_path, options, config, cpu_problem)
        return tensors

    @classmethod
    def _try_delegate(
        cls, model_path: Path, options: TFLiteOptions, config: DelegateConfig, cpu_problem: str | None
    ) -> None:
        trial = _trials[(str(model_path), config)] = delegates.run_trial(model_path, asdict(options))
        if trial.error is None:
            return
        if cpu_problem is not None:
            raise ModelLoadError(f"{trial.error}; nor can the CPU run {model_path.name}: {cpu_problem}")
        if config.fallback != "cpu":
            raise ModelLoadError(
                f"{trial.error} (parameter delegate_fallback=cpu would run the model on the CPU instead)"
            )
        log.warning("%s: running the model on the CPU instead (delegate_fallback=cpu)", trial.error)

    @classmethod
    def trial(cls, model_path: Path, options: TFLiteOptions) -> TrialResult:
        """The delegate's trial (run by edgeservers.runtimes.delegate_trial, in a process of its own): an instance for each
        distinct slot (each Edge TPU device listed), handed the model, with one inference on zeros."""
        config = options.delegate_config
        assert config is not None
        nodes = None
        tried: list[dict[str, str]] = []
        try:
            for slot_options in config.slot_options(cls.pool_slots(options)):
                if slot_options not in tried:
                    tried.append(slot_options)
                    _, nodes = _delegated(
                        model_path, options.num_threads, cls._resolver(model_path, options), config, slot_options
                    )
        except ModelLoadError as e:
            return TrialResult(str(e))
        return TrialResult(None, nodes)

    @classmethod
    def report(cls, model_path: Path, options: TFLiteOptions) -> dict[str, str]:
        """The delegate: its library, options (secrets masked) and fallback, whether it is used, the nodes it
        took, and the pool's cap to its devices."""
        config = options.delegate_config
        if config is None:
            return {}
        report = {
            "delegate": config.library,
            "delegate_options": delegates.shown(dict(config.options)),
            "delegate_fallback": config.fallback,
        }
        trial = _trials[(str(model_path), config)]
        if trial.error is not None:
            report["delegate_applied"] = f"no, the CPU runs the model (delegate_fallback=cpu): {trial.error}"
        else:
            report["delegate_applied"] = "yes"
            taken = f"{trial.nodes[0]} of {trial.nodes[1]}" if trial.nodes else None
            report["delegate_nodes"] = taken or "unknown: this TFLite runtime does not list its nodes"
        slots = cls.pool_slots(options)
        if slots < options.pool_size:
            devices = ", ".join(config.devices) or "the one libedgetpu finds"
            report["delegate_pool"] = (
                f"pool_size {options.pool_size} capped to {slots}: one interpreter per Edge TPU device ({devices})"
            )
        return report

    @classmethod
    def info_metrics(cls, model_path: Path, options: TFLiteOptions) -> list[dict]:
        """edgeservers_delegate_info{delegate, applied} when a delegate is set."""
        config = options.delegate_config
        if config is None:
            return []
        applied = _trials[(str(model_path), config)].error is None
        return [info_gauge(DELEGATE_INFO, {"delegate": config.library, "applied": "true" if applied else "false"})]

    @classmethod
    def pool_slots(cls, options: TFLiteOptions) -> int:
        """pool_size, capped to what the delegate's devices serve (one interpreter per Edge TPU)."""
        config = options.delegate_config
        limit = config.max_slots() if config else None
        pool = max(1, options.pool_size)
        return min(pool, limit) if limit else pool

    @classmethod
    def precision(cls, model_path: Path, options: TFLiteOptions) -> str:
        """f16 only where XNNPACK would choose it (`auto`, a model that allows it, a CPU with fp16 arithmetic)."""
        if options.inference_precision == "auto" and _allows_fp16(model_path) and _cpu_has_fp16_arithmetic():
            return "f16"
        return "f32"

    @classmethod
    def slot_threads(cls, options: TFLiteOptions, cpus: int) -> tuple[int, ...]:
        """num_threads for the first slot, which a request alone always gets; at most a share of the CPUs
        (cpus // pool size) for each further one, so that a full pool runs about one thread per core.
        The pool is pool_size slots, capped to the delegate's devices (pool_slots).

        Each interpreter has its own XNNPACK thread pool, whose threads spin while they wait for work:
        two slots of every core on 2 cores (4 threads) answered 3 % fewer requests/s at 4 clients than
        2 + 1 threads, where one request alone is as fast (bench.defaults' model; one thread alone: 1.5x
        slower). Each slot is an interpreter of its own, so adding one for the lone request costs
        memory (10 MB for mobilenet_v2)."""
        pool = cls.pool_slots(options)
        share = max(1, cpus // pool)
        return (options.num_threads,) + (min(options.num_threads, share),) * (pool - 1)

    @staticmethod
    def _resolver(model_path: Path, options: TFLiteOptions) -> OpResolverType:
        """f32 for a model that allows fp16: TFLite's own float kernels, without the XNNPACK delegate
        (which would compute it in fp16 on ARM CPUs with fp16 arithmetic)."""
        f32_only = options.inference_precision == "f32" and _allows_fp16(model_path)
        return OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES if f32_only else OpResolverType.AUTO

    def __init__(self, model_path: Path, options: TFLiteOptions, signature: ModelSignature, cpus: int):
        self._resolver_type = self._resolver(model_path, options)
        config = options.delegate_config
        if config is not None and (str(model_path), config) not in _trials:
            self.inspect(model_path, options)  # not the servers' way (they inspect first), but the same decision
        trial = _trials.get((str(model_path), config)) if config else None
        self._delegate = config if trial is not None and trial.error is None else None
        # Each slot's delegate options, taken in slot order by _new_slot.
        self._slot_delegate_options = iter(
            self._delegate.slot_options(self.pool_slots(options)) if self._delegate else []
        )
        super().__init__(model_path, options, signature, cpus)

    def _new_slot(self, model_path: Path, options: TFLiteOptions) -> tuple[Interpreter, dict[str, int], dict[str, int]]:
        if self._delegate is None:
            interpreter = _interpreter(model_path, options.num_threads, self._resolver_type)
            _allocate(interpreter, model_path)
        else:
            slot_options = next(self._slot_delegate_options)
            interpreter, _ = _delegated(
                model_path, options.num_threads, self._resolver_type, self._delegate, slot_options
            )
        inputs = {d["name"]: d["index"] for d in interpreter.get_input_details()}
        outputs = {d["name"]: d["index"] for d in interpreter.get_output_details()}
        return interpreter, inputs, outputs

    def _run(self, slot: Any, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        interpreter, input_index, output_index = slot
        for name, value in inputs.items():
            interpreter.set_tensor(input_index[name], value)
        interpreter.invoke()
        return {spec.name: interpreter.get_tensor(output_index[spec.name]) for spec in self.signature.outputs}
