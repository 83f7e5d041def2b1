"""OpenVINO behind the runtime seam: one compiled model, a pool of infer requests (current `openvino` API)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import openvino as ov

from ..errors import ModelLoadError
from .base import ModelRuntime, ModelSignature, Quantization, RuntimeOptions, TensorSpec

# Nodes that move or re-type a tensor without changing its values' meaning.
_PASS_THROUGH = {"Transpose", "Reshape", "Squeeze", "Unsqueeze", "Convert"}
# Devices that stand for a choice among real ones, so they are not in `available_devices`.
_VIRTUAL_DEVICES = ("AUTO", "MULTI", "HETERO", "BATCH")
# inference_precision -> the device capability (OPTIMIZATION_CAPABILITIES) that computes in it.
_CAPABILITIES = {"f32": "FP32", "bf16": "BF16", "f16": "FP16"}


def _fake_quantize(node: Any, quantizes: bool) -> Quantization | None:
    """The scale and zero point a per-tensor FakeQuantize with constant ranges stands for.

    A FakeQuantize maps [in_low, in_high] linearly onto [out_low, out_high]. Models read from a
    quantized .tflite carry each tensor's quantization this way (OpenVINO exposes it no other way):
    on an output it maps real values onto integers (`quantizes`), on an input integers onto real values.
    """
    if node.get_type_name() != "FakeQuantize":
        return None
    bounds = []
    for i in range(1, 5):
        const = node.input_value(i).get_node()
        if const.get_type_name() != "Constant" or const.get_data().size != 1:
            return None
        bounds.append(float(const.get_data().reshape(-1)[0]))
    in_low, in_high, out_low, out_high = bounds
    real_low, real_high, q_low, q_high = bounds if quantizes else (out_low, out_high, in_low, in_high)
    scale = (real_high - real_low) / (q_high - q_low)
    return Quantization(scale, int(round(q_low - real_low / scale)))


def _output_quantization(result: Any) -> Quantization | None:
    """A quantized (u8/i8) output ends in FakeQuantize -> Convert (through layout-only nodes)."""
    node = result.input_value(0).get_node()
    while node.get_type_name() in _PASS_THROUGH:
        node = node.input_value(0).get_node()
    return _fake_quantize(node, quantizes=True)


def _input_quantization(parameter: Any) -> Quantization | None:
    """A quantized input's only consumer (through layout-only nodes) is the FakeQuantize that dequantizes it."""
    node = parameter
    while True:
        consumers = list(node.output(0).get_target_inputs())
        if len(consumers) != 1:
            return None
        node = consumers[0].get_node()
        if node.get_type_name() not in _PASS_THROUGH:
            return _fake_quantize(node, quantizes=False)


def _layout(port: Any) -> str | None:
    """NCHW or NHWC when the model carries the port's layout (IR rt_info, set by PrePostProcessor or
    `set_layout`) and it names channels, height and width; None when it does not."""
    helpers = ov.layout_helpers
    layout = helpers.get_layout(port)
    if not all(has(layout) for has in (helpers.has_channels, helpers.has_height, helpers.has_width)):
        return None
    return {"[N,C,H,W]": "NCHW", "[N,H,W,C]": "NHWC"}.get(layout.to_string())


def _spec(port: Any, quantization: Quantization | None) -> TensorSpec:
    shape = tuple(int(d.get_length()) if d.is_static else -1 for d in port.get_partial_shape())
    dtype = np.dtype(port.get_element_type().to_dtype())
    return TensorSpec(port.get_any_name(), dtype, shape, quantization if dtype.kind in "ui" else None, _layout(port))


# The lines of an OpenVINO message that only say where in its sources it was raised.
_SOURCE_LOCATION = re.compile(r"^(Exception from \S+:\d+:|Check '.*' failed at \S+:\d+:)$")


def _first_line(error: Exception) -> str:
    """OpenVINO's messages run over many lines, source locations first; the rest, on one line, says what failed."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    said = [line for line in lines if not _SOURCE_LOCATION.match(line)]
    return " ".join(said or lines) or type(error).__name__


def _named_devices(device: str) -> list[str]:
    """The real devices a device string names: GPU.1 itself; the candidates of AUTO:GPU,CPU, MULTI:...,
    HETERO:... and BATCH:GPU(4) (not those AUTO:-GPU excludes); none for AUTO alone."""
    kind, colon, candidates = device.partition(":")
    if kind not in _VIRTUAL_DEVICES:
        return [device]
    names = (c.split("(")[0].strip() for c in candidates.split(",")) if colon else iter(())
    return [name for name in names if name and not name.startswith("-")]


def _is_available(name: str, available: list[str]) -> bool:
    """As OpenVINO lists it (GPU.1), or a kind it lists (GPU for GPU.0 and GPU.1)."""
    return name in available or any(a.partition(".")[0] == name for a in available)


def _read(core: ov.Core, model_path: Path) -> ov.Model:
    try:
        return core.read_model(str(model_path))
    except RuntimeError as e:
        raise ModelLoadError(f"OpenVINO cannot read {model_path}: {_first_line(e)}") from None


def _file_key(model_path: Path) -> tuple[str, int, int]:
    stat = model_path.stat()
    return str(model_path), stat.st_mtime_ns, stat.st_size


# The model `inspect` read last, for the constructor that follows in this process or in a worker forked
# from it: reading a .tflite or .onnx (a conversion) costs as much as compiling it, 0.5 s of CPU for
# mobilenet_v2 here, and a server reads in its main process, then loads in each gRPC worker and in the
# REST worker. The constructor takes it; kept any longer it would hold a second copy of the weights.
_inspected: dict[tuple[str, int, int], ov.Model] = {}


@dataclass(frozen=True)
class OpenVINOOptions(RuntimeOptions):
    """OpenVINO's own settings besides the shared ones."""

    device: str = "CPU"
    performance_hint: str = "LATENCY"


class OpenVINORuntime(ModelRuntime[OpenVINOOptions]):
    """One compiled model shared by a pool of infer requests (each request runs one inference at a time)."""

    name = "openvino"
    options_class = OpenVINOOptions
    model_suffixes = (".xml", ".onnx", ".tflite")
    precisions = ("f32", "auto", "bf16", "f16")

    @classmethod
    def inspect(cls, model_path: Path, options: OpenVINOOptions) -> tuple[list[TensorSpec], list[TensorSpec]]:
        core = ov.Core()
        model = _read(core, model_path)
        _inspected.clear()
        _inspected[_file_key(model_path)] = model
        device, available = options.device, core.available_devices
        missing = [name for name in _named_devices(device) if not _is_available(name, available)]
        if missing:
            which = (
                "is"
                if missing == [device]
                else f"names {', '.join(missing)}, which {'is' if len(missing) == 1 else 'are'}"
            )
            raise ModelLoadError(
                f"parameter device: OpenVINO device {device!r} {which} not available here; available: {', '.join(available)}"
            )
        inputs = [_spec(p.output(0), _input_quantization(p)) for p in model.get_parameters()]
        # model.outputs[i] is the tensor that model.get_results()[i] returns.
        outputs = [_spec(port, _output_quantization(r)) for port, r in zip(model.outputs, model.get_results())]
        return inputs, outputs

    @classmethod
    def release_inspected(cls) -> None:
        _inspected.clear()

    @classmethod
    def precision(cls, model_path: Path, options: OpenVINOOptions) -> str:
        """The explicit precision, if the device computes in it (OpenVINO would silently run f32
        instead); for `auto` the device's own INFERENCE_PRECISION_HINT: bf16 on CPUs with AMX or
        avx512_bf16, f16 on ARM CPUs with fp16 arithmetic, else f32."""
        core = ov.Core()
        device, wanted = options.device, options.inference_precision
        try:
            if wanted == "auto":
                return core.get_property(device, "INFERENCE_PRECISION_HINT").get_type_name()
            capabilities = core.get_property(device, "OPTIMIZATION_CAPABILITIES")
        except RuntimeError:  # virtual devices (AUTO:..., MULTI:...) answer neither: the real device decides
            return wanted
        if _CAPABILITIES[wanted] not in capabilities:
            raise ModelLoadError(
                f"parameter inference_precision={wanted!r}: OpenVINO device {device} cannot compute in {wanted} "
                f"here (its OPTIMIZATION_CAPABILITIES: {', '.join(capabilities)}); use f32 or auto"
            )
        return wanted

    def __init__(self, model_path: Path, options: OpenVINOOptions, signature: ModelSignature, cpus: int):
        core = ov.Core()
        device = options.device
        config = {
            "PERFORMANCE_HINT": options.performance_hint,
            "INFERENCE_NUM_THREADS": options.num_threads,
        }
        if options.inference_precision != "auto":
            config["INFERENCE_PRECISION_HINT"] = options.inference_precision
        if device != "CPU":
            config.pop("INFERENCE_NUM_THREADS")
        model = _inspected.pop(_file_key(model_path), None)
        if model is None:
            model = _read(core, model_path)
        try:
            self._compiled = core.compile_model(model, device, config)
        except RuntimeError as e:
            raise ModelLoadError(f"OpenVINO cannot compile {model_path} for {device}: {_first_line(e)}") from None
        super().__init__(model_path, options, signature, cpus)

    def _new_slot(self, model_path: Path, options: OpenVINOOptions) -> ov.InferRequest:
        return self._compiled.create_infer_request()

    def _run(self, slot: Any, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        slot.infer(dict(inputs))
        return {spec.name: slot.get_tensor(spec.name).data.copy() for spec in self.signature.outputs}
