"""The limit: the runtime in-process, no server, on the same inputs and with the same thread budget.

`invoke`: the plain runtime (ai_edge_litert's Interpreter / an OpenVINO infer request): set the input,
run, read the outputs; nothing of ours. `pipeline`: the package's own steps, as a server request runs
them minus the protocol: decode the JPEG (edgeservers.images.decode_image), resize/convert/quantize
(ImagePreprocessor), infer on the runtime's pool (TFLiteRuntime / OpenVINORuntime), dequantize and
post-process (edgeservers.postprocess: top-k labels or detections).

Both use `pool_size` independent interpreters/infer requests with `num_threads` threads each, shared
by the load threads through a queue, as a server worker shares its pool.
"""

from __future__ import annotations

import queue
from pathlib import Path
from typing import Any, Callable

import numpy as np

from edgeservers import postprocess
from edgeservers.images import ImagePreprocessor, decode_image
from edgeservers.modelfiles import find_model, read_labels
from edgeservers.runtime import ModelSignature
from edgeservers.settings import Settings


def _runtime_class(runtime: str):
    if runtime == "tflite":
        from edgeservers.runtime_tflite import TFLiteRuntime

        return TFLiteRuntime
    from edgeservers.runtime_openvino import OpenVINORuntime

    return OpenVINORuntime


class _Call:
    """drive() wants a client with __call__ -> (ok, body) and close()."""

    def __init__(self, fn: Callable[[], Any]):
        self._fn = fn

    def __call__(self) -> tuple[bool, bytes]:
        self._fn()
        return True, b""

    def close(self) -> None:
        pass


class Limits:
    """In-process runners for one model on one runtime."""

    def __init__(self, runtime: str, params: dict[str, Any]):
        self.runtime = runtime
        self.settings = Settings.from_parameters(params)
        cls = _runtime_class(runtime)
        self.options = cls.options_class.from_settings(self.settings)
        self.model_path = find_model(Path(self.settings.model_uri), cls.model_suffixes)
        inputs, outputs = cls.inspect(self.model_path, self.options)
        self.signature = ModelSignature(tuple(inputs), tuple(outputs))
        labels = read_labels(self.model_path, self.settings.labels)
        kind = postprocess.resolve(self.settings.postprocess, self.signature.outputs, labels)
        self.postprocessor = postprocess.build(kind, self.signature.outputs, labels, self.settings)
        self.preprocessor = ImagePreprocessor(self.signature.inputs[0], self.settings)
        self._cls = cls

    def image_tensor(self, jpeg: bytes) -> np.ndarray:
        """The input tensor the server computes for this image (what tensor payloads carry)."""
        return self.preprocessor(decode_image(jpeg))

    def invoke(self, tensor: np.ndarray) -> Callable[[], _Call]:
        """The plain runtime: set the input, run, read every output."""
        slots: queue.Queue = queue.Queue()
        if self.runtime == "tflite":
            try:
                from ai_edge_litert.interpreter import Interpreter
            except ImportError:
                from tflite_runtime.interpreter import Interpreter
            for _ in range(self.options.pool_size):
                interpreter = Interpreter(model_path=str(self.model_path), num_threads=self.options.num_threads)
                interpreter.allocate_tensors()
                slots.put(interpreter)
            index = interpreter.get_input_details()[0]["index"]
            outputs = [d["index"] for d in interpreter.get_output_details()]

            def run() -> None:
                it = slots.get()
                try:
                    it.set_tensor(index, tensor)
                    it.invoke()
                    for o in outputs:
                        it.get_tensor(o)
                finally:
                    slots.put(it)
        else:
            import openvino as ov

            core = ov.Core()
            config = {"PERFORMANCE_HINT": self.settings.performance_hint, "INFERENCE_NUM_THREADS": self.options.num_threads}
            if self.settings.inference_precision != "auto":
                config["INFERENCE_PRECISION_HINT"] = self.settings.inference_precision
            compiled = core.compile_model(core.read_model(str(self.model_path)), "CPU", config)
            for _ in range(self.options.pool_size):
                slots.put(compiled.create_infer_request())
            name = self.signature.inputs[0].name

            def run() -> None:
                request = slots.get()
                try:
                    request.infer({name: tensor})
                finally:
                    slots.put(request)

        return lambda: _Call(run)

    def pipeline(self, jpeg: bytes) -> Callable[[], _Call]:
        """decode -> preprocess -> infer (the package's runtime pool) -> dequantize -> post-process."""
        runtime = self._cls(self.model_path, self.options, self.signature)
        spec = self.preprocessor.spec
        outputs_specs = self.signature.outputs
        post = self.postprocessor

        def run() -> None:
            pixels = decode_image(jpeg)
            outputs = runtime.infer({spec.name: self.preprocessor(pixels)})
            real = {s.name: s.quantization.dequantize(outputs[s.name]) if s.quantization else outputs[s.name] for s in outputs_specs}
            if post is not None:
                post(real, pixels.shape[:2])

        return lambda: _Call(run)
