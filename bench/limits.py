"""The limit: the runtime in-process, no server, on the same inputs and with the same thread budget.

`invoke`: the plain runtime (the TFLite Interpreter / an OpenVINO infer request): set the input, run,
read the outputs; nothing of ours. `pipeline`: the server's own request steps minus the protocol:
the server class built and loaded as the wrapper does it, then the model's `predict` on the JPEG (decode,
resize/convert/quantize, infer on the server's pool, dequantize and post-process: top-k labels or
detections), its metrics handed over as after every request.

Both use `pool_size` independent interpreters/infer requests with `num_threads` threads each, shared
by the load threads through a queue, as a server worker shares its pool.
"""

from __future__ import annotations

import queue
from collections.abc import Callable
from typing import Any

import numpy as np

from edgeservers.core.images import decode_image
from edgeservers.core.payload import Payload
from edgeservers.metrics import RequestMetrics
from edgeservers.seldon.component import EdgeModelServer


def server_class(runtime: str) -> type[EdgeModelServer]:
    if runtime == "tflite":
        from TFLiteServer import TFLiteServer

        return TFLiteServer
    from OpenVINOServer import OpenVINOServer

    return OpenVINOServer


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
        # The server's own start-up checks and choices (parameters, model file, signature, pre- and post-processing).
        self.server = server_class(runtime)(**params)
        self.settings = self.server.model.settings
        self.options = self.server.model.options
        self.model_path = self.server.model.model_path
        self.signature = self.server.model.signature

    def image_tensor(self, jpeg: bytes) -> np.ndarray:
        """The input tensor the server computes for this image (what tensor payloads carry)."""
        image = self.server.model.image
        assert image is not None, "the model takes no images"
        return image(decode_image(jpeg)[0])

    def invoke(self, tensor: np.ndarray) -> Callable[[], _Call]:
        """The plain runtime: set the input, run, read every output."""
        slots: queue.Queue = queue.Queue()
        if self.runtime == "tflite":
            from edgeservers.runtimes.tflite import Interpreter

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
            compiled = core.compile_model(
                core.read_model(str(self.model_path)),
                "CPU",
                {"PERFORMANCE_HINT": self.settings.performance_hint, "INFERENCE_NUM_THREADS": self.options.num_threads},
            )
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
        """decode -> preprocess -> infer (the server's runtime pool) -> dequantize -> post-process."""
        server = self.server
        server.load()  # the worker's pool, as in each server worker
        payload = Payload("image", image=jpeg)

        def run() -> None:
            server.model.predict(payload, True, RequestMetrics())
            server.metrics()

        return lambda: _Call(run)
