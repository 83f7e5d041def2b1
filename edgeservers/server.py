"""The Seldon component both servers are: parameters and model checks at start, then predict.

`__init__` runs once in Seldon's main process, before it forks the REST and gRPC workers: it
checks every parameter and reads the model's signature (so a model that cannot load stops the
process with one line, and `init_metadata` has something to say). `load()` runs in each worker
and creates that worker's pool of inference slots.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from typing import Any, ClassVar, Mapping, NoReturn

import numpy as np
from seldon_core.proto import prediction_pb2
from seldon_core.user_model import SeldonComponent

from . import codecs, oip, postprocess, seldon_compat
from .errors import BadRequest, ModelLoadError
from .images import ImagePreprocessor, decode_image
from .metrics import INFERENCE, POSTPROCESS, PREPROCESS, MetricsBatch, RequestMetrics
from .modelfiles import find_model, local_model_dir, read_labels
from .runtime import ModelRuntime, ModelSignature, RuntimeOptions, select
from .settings import Settings


def _stop(server: str, error: Exception, code: int) -> NoReturn:
    """End the process at start with one clear line (no traceback: the cause is the user's to fix)."""
    print(f"{server}: cannot load model: {error}", file=sys.stderr, flush=True)
    if code == 3:  # in a forked worker: 3 makes gunicorn stop the whole server, not restart the worker
        os._exit(code)
    raise SystemExit(code)


@dataclass(frozen=True)
class Prediction:
    """One request's result, before any protocol writes it: the selected raw outputs, the
    post-processed answer when one applies, and whether `confidence_threshold` found it uncertain
    (None when no threshold is set)."""

    outputs: dict[str, np.ndarray]
    answer: postprocess.Answer | None
    uncertain: bool | None


class EdgeModelServer(SeldonComponent):
    """A Seldon model server for one model on one runtime; subclasses only name the runtime."""

    runtime_class: ClassVar[type[ModelRuntime]]

    def __init__(self, **parameters: Any):
        super().__init__()
        try:
            self._prepare(parameters)
        except ModelLoadError as e:
            _stop(type(self).__name__, e, code=1)
        self._runtime: ModelRuntime | None = None
        self._metrics = MetricsBatch(self._settings.metrics_interval)
        seldon_compat.install()  # here, in the main process, so every forked worker has it
        # The one blueprint Seldon's wrapper registers on its REST app (see seldon_compat), with the
        # Open Inference Protocol's routes; its gRPC service joins Seldon's on the gRPC port.
        self.model_error_handler = seldon_compat.rest_blueprint(oip.rest_routes(self))
        seldon_compat.add_grpc_services(oip.grpc_registrar(self))

    def _prepare(self, parameters: Mapping[str, Any]) -> None:
        settings = Settings.from_parameters(parameters)
        self._settings = settings
        self._options = RuntimeOptions(
            num_threads=settings.num_threads,
            pool_size=settings.pool_size,
            extra={"device": settings.device, "performance_hint": settings.performance_hint},
        )
        self._model_path = find_model(local_model_dir(settings.model_uri), self.runtime_class.model_suffixes)
        inputs, outputs = self.runtime_class.inspect(self._model_path, self._options)
        self._signature = ModelSignature(
            inputs=select(inputs, settings.input_names, "input"),
            outputs=select(outputs, settings.output_names, "output"),
        )
        labels = read_labels(self._model_path, settings.labels)
        self._image, self._not_image = self._image_preprocessor()
        self._postprocess_kind = postprocess.resolve(settings.postprocess, self._signature.outputs, labels)
        if self._postprocess_kind in ("detection", "segmentation") and self._image is None:
            raise ModelLoadError(f"postprocess={self._postprocess_kind} needs an image input: {self._not_image}")
        self._postprocessor = postprocess.build(self._postprocess_kind, self._signature.outputs, labels, settings)

    def _image_preprocessor(self) -> tuple[ImagePreprocessor | None, str]:
        """The preprocessor for image payloads, or None and why the model cannot take images."""
        inputs = self._signature.inputs
        if len(inputs) != 1:
            return None, f"the model has {len(inputs)} inputs ({', '.join(i.name for i in inputs)})"
        try:
            return ImagePreprocessor(inputs[0], self._settings), ""
        except ModelLoadError as e:
            return None, str(e)

    @property
    def model_name(self) -> str:
        return self._model_path.stem

    # --- Seldon component interface -------------------------------------------------------

    def load(self) -> None:
        """Create this worker's inference pool and run one inference, so the first request is not the slow one."""
        try:
            self._runtime = self.runtime_class(self._model_path, self._options, self._signature)
            self._runtime.infer(self._zeros())
        except ModelLoadError as e:
            _stop(type(self).__name__, e, code=3)

    def predict_raw(self, request: Any) -> Any:
        """Seldon's protocol: the request decoded, predicted and answered in the request's own form."""
        proto = isinstance(request, prediction_pb2.SeldonMessage)
        metrics = RequestMetrics()
        with metrics.timed(PREPROCESS):
            payload = codecs.decode_grpc(request) if proto else codecs.decode_rest(request)
        # Images get the model's post-processing; tensors get raw outputs unless one was asked for explicitly.
        wants_answer = payload.form == "image" or self._settings.postprocess != "auto"
        prediction = self.predict_payload(payload, wants_answer, metrics)
        meta = {"tags": self.tags(prediction.uncertain), "metrics": self.metrics()}
        return codecs.encode(payload.form, prediction.outputs, prediction.answer, meta, proto)

    def predict_payload(self, payload: codecs.Payload, wants_answer: bool, metrics: RequestMetrics) -> Prediction:
        """payload -> tensors -> runtime -> outputs -> post-processing, for any protocol; records `metrics`."""
        runtime = self._loaded()
        with metrics.timed(PREPROCESS):
            inputs, image_size = self._inputs(payload)
        with metrics.timed(INFERENCE):
            outputs = runtime.infer(inputs)
        answer = None
        if wants_answer and self._postprocessor is not None:
            with metrics.timed(POSTPROCESS):
                answer = self._postprocessor(outputs, image_size)
        threshold = self._settings.confidence_threshold
        uncertain = None
        if threshold is not None:
            uncertain = answer is not None and answer.top_score is not None and answer.top_score < threshold
            metrics.uncertain = uncertain
        self._metrics.add(metrics)
        return Prediction(outputs, answer, uncertain)

    def health_status(self) -> dict[str, Any]:
        """Healthy only if a real inference runs (on zeros of each input's shape and dtype)."""
        runtime = self._loaded()
        start = time.perf_counter()
        runtime.infer(self._zeros())
        return {
            "status": "ok",
            "model": self.model_name,
            "runtime": runtime.name,
            "inference_ms": round((time.perf_counter() - start) * 1000.0, 3),
        }

    def health_status_raw(self) -> dict[str, Any]:
        """/health/status as the wrapper would build it, minus its call to metrics(), which would
        hand this worker's request metrics over under the "health" method label."""
        return {"jsonData": self.health_status()}

    def init_metadata(self) -> dict[str, Any]:
        return {
            "name": self.model_name,
            "platform": self.runtime_class.name,
            "inputs": [spec.describe() for spec in self._signature.inputs],
            "outputs": [spec.describe() for spec in self._signature.outputs],
            "custom": {
                "postprocess": self._postprocess_kind,
                "image_input": "yes" if self._image else f"no: {self._not_image}",
            },
        }

    def tags(self, uncertain: bool | None = None) -> dict[str, Any]:
        """meta.tags of an answer: the model, the runtime and, with a confidence_threshold, `uncertain`."""
        tags: dict[str, Any] = {"model": self.model_name, "runtime": self.runtime_class.name}
        if uncertain is not None:
            tags["uncertain"] = uncertain
        return tags

    def metrics(self) -> list[dict]:
        """Pre-processing, inference and post-processing times and uncertain answers of the requests
        since the last hand-over to Seldon, when one is due (see MetricsBatch)."""
        return self._metrics.due()

    # --- request steps ----------------------------------------------------------------------

    def _loaded(self) -> ModelRuntime:
        if self._runtime is None:
            raise BadRequest("the model is not loaded yet in this worker: retry shortly")
        return self._runtime

    def _zeros(self) -> dict[str, np.ndarray]:
        return {s.name: np.zeros([max(d, 1) for d in s.shape], s.dtype) for s in self._signature.inputs}

    def _inputs(self, payload: codecs.Payload) -> tuple[dict[str, np.ndarray], tuple[int, int] | None]:
        """Input tensors by name, and the (height, width) that detected boxes and masks refer to."""
        specs = self._signature.inputs
        if payload.form == "image":
            if self._image is None:
                raise BadRequest(f"this model does not take images ({self._not_image}): send tensors instead")
            pixels = decode_image(payload.image)
            return {self._image.spec.name: self._image(pixels)}, pixels.shape[:2]
        size = (self._image.geometry.height, self._image.geometry.width) if self._image else None
        if payload.form == "jsonData":
            names = [s.name for s in specs]
            unknown = [k for k in payload.tensors if k not in names]
            missing = [n for n in names if n not in payload.tensors]
            if unknown or missing:
                raise BadRequest(
                    f"jsonData needs one entry per input name ({', '.join(names)}); "
                    + (f"unknown: {', '.join(map(str, unknown))}" if unknown else f"missing: {', '.join(missing)}")
                )
            return {s.name: codecs.as_input(s, payload.tensors[s.name], f"jsonData[{s.name!r}]") for s in specs}, size
        if len(specs) != 1:
            raise BadRequest(
                f"the model has {len(specs)} inputs ({', '.join(s.name for s in specs)}): "
                f"send jsonData with one entry per input name, or select one with input_tensor_name"
            )
        return {specs[0].name: codecs.as_input(specs[0], payload.tensors[None], payload.form)}, size
