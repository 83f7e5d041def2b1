"""The model, whatever protocol asks: its parameters and checks at start, then payload -> tensors -> runtime ->
outputs -> post-processing, for Seldon's v1 protocol and the Open Inference Protocol alike.

`EdgeModel(...)` runs once in the server's main process, before any worker is forked: it checks every
parameter and reads the model's signature, so that a model that cannot load stops the process with one
line. `load()` runs in each process that serves and creates its pool of inference slots.
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from ..data_loop.escalation import AT_EDGE, Escalator
from ..data_loop.image_store import ImageStore, ObjectRef, parse_store
from ..data_loop.spool import uncertain_sender
from ..errors import BadRequest, ModelLoadError, Unavailable
from ..metrics import INFERENCE, POSTPROCESS, PREPROCESS, MetricsBatch, RequestMetrics
from ..process_tuning import adaptive_concurrency, available_cpus
from ..runtimes.base import ModelRuntime, ModelSignature, TensorSpec, select
from ..settings import Settings
from . import postprocess, uncertainty
from .images import ImagePreprocessor, check_opencv_cap, decode_image
from .modelfiles import find_model, local_model_dir, model_provenance, read_labels
from .payload import IMAGE, NAMED, Payload, Prediction


class EdgeModel:
    """One model on one runtime, checked at start, answering predictions from a pool of inference slots.

    `runtime_class` is the runtime behind the seam (edgeservers/runtimes/base.py); `concurrent_requests` how
    many requests the serving process may run at once (the defaults of pool_size and num_threads follow);
    `count` adds 1 to a counter of the server's metrics at once, for what happens off any request (uploads);
    `server` names the server in messages (TFLiteServer, OpenVINOServer).
    """

    def __init__(
        self,
        runtime_class: type[ModelRuntime[Any]],
        parameters: Mapping[str, Any],
        concurrent_requests: int,
        count: Callable[[str], None],
        server: str,
    ):
        self.runtime_class = runtime_class
        self.cpus = available_cpus()
        self.settings = settings = Settings.from_parameters(
            parameters, adaptive_concurrency(concurrent_requests, self.cpus)
        )
        if settings.inference_precision not in runtime_class.precisions:
            raise ModelLoadError(
                f"parameter inference_precision={settings.inference_precision!r}: expected one of "
                f"{', '.join(runtime_class.precisions)} for {server}"
            )
        check_opencv_cap(settings.max_image_pixels)
        self.options = runtime_class.options_class.from_settings(settings)
        model_dir = local_model_dir(settings.model_uri, settings.model_cache_dir)
        self.model_path = find_model(model_dir, runtime_class.model_suffixes)
        self.provenance = model_provenance(model_dir)
        inputs, outputs = runtime_class.inspect(self.model_path, self.options)
        self.precision = runtime_class.precision(self.model_path, self.options)
        self.signature = ModelSignature(
            inputs=select(inputs, settings.input_names, "input"),
            outputs=select(outputs, settings.output_names, "output"),
        )
        self.labels = read_labels(self.model_path, settings.labels, settings.label_names)
        self.image, self.not_image = self._image_preprocessor()
        self.postprocess_kind = postprocess.resolve(settings.postprocess, self.signature.outputs, self.labels)
        if self.postprocess_kind in ("detection", "segmentation") and self.image is None:
            raise ModelLoadError(f"postprocess={self.postprocess_kind} needs an image input: {self.not_image}")
        self._postprocessor = postprocess.build(self.postprocess_kind, self.signature.outputs, self.labels, settings)
        self.image_store, uncertain_prefix = _object_stores(settings)
        self.uncertain = uncertain_sender(uncertain_prefix, settings, count) if uncertain_prefix else None
        self.is_uncertain = uncertainty.criterion(settings, self.postprocess_kind)
        self.escalator = Escalator.from_settings(settings, self.postprocess_kind)
        self.metrics_batch = MetricsBatch(
            settings.metrics_interval, runtime_class.info_metrics(self.model_path, self.options)
        )
        self._runtime: ModelRuntime[Any] | None = None

    def _image_preprocessor(self) -> tuple[ImagePreprocessor | None, str]:
        """The preprocessor for image payloads, or None and why the model cannot take images."""
        inputs = self.signature.inputs
        if len(inputs) != 1:
            return None, f"the model has {len(inputs)} inputs ({', '.join(i.name for i in inputs)})"
        try:
            return ImagePreprocessor(inputs[0], self.settings), ""
        except ModelLoadError as e:
            return None, str(e)

    # --- what it is

    @property
    def file_name(self) -> str:
        """The model file's stem: what v1 answers and metadata call it."""
        return self.model_path.stem

    @property
    def name(self) -> str:
        """The name Open Inference Protocol clients use: model_name, else the file's stem."""
        return self.settings.model_name or self.file_name

    @property
    def version(self) -> str:
        return self.settings.model_version

    @property
    def has_answer(self) -> bool:
        """Whether a post-processing turns outputs into an answer (labels, boxes, regions)."""
        return self._postprocessor is not None

    @property
    def input_elements(self) -> int | None:
        """The values of all its inputs together; None when a dimension is dynamic."""
        if any(d < 1 for spec in self.signature.inputs for d in spec.shape):
            return None
        return sum(math.prod(spec.shape) for spec in self.signature.inputs)

    @property
    def loaded(self) -> bool:
        return self._runtime is not None

    def describe(self) -> dict[str, str]:
        """How the model runs, as strings (metadata's `custom`)."""
        return {
            "postprocess": self.postprocess_kind,
            "inference_precision": self.precision,
            "image_input": "yes" if self.image else f"no: {self.not_image}",
            "pool_size": str(self.settings.pool_size),
            "num_threads": str(self.settings.num_threads),
            "slot_threads": ",".join(map(str, self.runtime_class.slot_threads(self.options, self.cpus))),
            **self.provenance,
            **self.runtime_class.report(self.model_path, self.options),
        }

    def tags(self, prediction: Prediction | None = None) -> dict[str, Any]:
        """What an answer says of itself: the model, the runtime and the prediction's report (`uncertain` with a
        confidence_threshold; who answered, with escalate_url)."""
        return {
            "model": self.file_name,
            "runtime": self.runtime_class.name,
            **(prediction.report() if prediction else {}),
        }

    def due_metrics(self) -> list[dict]:
        """The request metrics gathered since the last hand-over, when one is due (see MetricsBatch)."""
        return self.metrics_batch.due()

    # --- serving

    def load(self) -> None:
        """Create this process's inference pool and run one inference, so the first request is not the slow
        one (a ModelLoadError when that fails); start its upload thread."""
        self._runtime = self.runtime_class(self.model_path, self.options, self.signature, self.cpus)
        self._runtime.infer(self._zeros())
        if self.uncertain is not None:
            self.uncertain.start()

    def release_inspected(self) -> None:
        """This process will not load the model (a REST arbiter, whose workers load their own)."""
        self.runtime_class.release_inspected()

    def health(self) -> dict[str, Any]:
        """Healthy only if a real inference runs (on zeros of each input's shape and dtype)."""
        runtime = self._loaded()
        start = time.perf_counter()
        runtime.infer(self._zeros())
        return {
            "status": "ok",
            "model": self.file_name,
            "runtime": runtime.name,
            "inference_ms": round((time.perf_counter() - start) * 1000.0, 3),
        }

    def predict(
        self, payload: Payload, wants_answer: bool, metrics: RequestMetrics, image_uri: str | None = None
    ) -> Prediction:
        """payload -> tensors -> runtime -> outputs -> post-processing; records `metrics` and sends an
        uncertain image home when uncertain_store is set (`image_uri`: where it came from, if fetched) and asks the
        bigger model when escalate_url is set."""
        runtime = self._loaded()
        with metrics.timed(PREPROCESS):
            inputs, image_size = self._inputs(payload)
        with metrics.timed(INFERENCE):
            outputs = runtime.infer(inputs)
        answer = None
        if wants_answer and self._postprocessor is not None:
            with metrics.timed(POSTPROCESS):
                answer = self._postprocessor(outputs, image_size)
        uncertain = None
        if self.is_uncertain is not None:
            uncertain = answer is not None and self.is_uncertain(answer)
            metrics.uncertain = uncertain
        edge_answer, escalation = answer, None
        if self.escalator is not None and answer is not None and payload.form == IMAGE:
            answer, escalation = (
                self.escalator.answer(payload.image, answer, metrics) if uncertain else (answer, AT_EDGE)
            )
        self.metrics_batch.add(metrics)
        if uncertain and self.uncertain is not None and payload.form == IMAGE:
            self._send_home(payload, edge_answer, image_uri, answer if answer is not edge_answer else None)
        return Prediction(outputs, answer, uncertain, escalation)

    def _send_home(
        self,
        payload: Payload,
        answer: postprocess.Answer | None,
        image_uri: str | None,
        escalated: postprocess.Answer | None,
    ) -> None:
        """Queue an uncertain image (bytes as received), what the model said of it and what the bigger model
        said, if asked, for uploading."""
        assert self.uncertain is not None and answer is not None
        sidecar = {
            "model": self.file_name,
            "runtime": self.runtime_class.name,
            "answer": answer.body,
            "score": answer.top_score,
            "confidence_threshold": self.settings.confidence_threshold,
            "request_id": str(payload.tags.get("request_id") or uuid.uuid4().hex),
            "tags": payload.tags,
            "image_uri": image_uri,
            **({"escalated_answer": escalated.body} if escalated is not None else {}),
        }
        self.uncertain.submit(payload.image, sidecar)

    def _loaded(self) -> ModelRuntime[Any]:
        if self._runtime is None:
            raise Unavailable("the model is not loaded yet in this worker: retry shortly")
        return self._runtime

    def _zeros(self) -> dict[str, np.ndarray]:
        return {s.name: np.zeros([max(d, 1) for d in s.shape], s.dtype) for s in self.signature.inputs}

    def _inputs(self, payload: Payload) -> tuple[dict[str, np.ndarray], tuple[int, int] | None]:
        """Input tensors by name, and the (height, width) that detected boxes and masks refer to."""
        specs = self.signature.inputs
        if payload.form == IMAGE:
            if self.image is None:
                raise BadRequest(f"this model does not take images ({self.not_image}): send tensors instead")
            fit = (self.image.geometry.height, self.image.geometry.width) if self.settings.reduced_decode else None
            pixels, image_size = decode_image(payload.image, self.settings.max_image_pixels, payload.image_field, fit)
            return {self.image.spec.name: self.image(pixels)}, image_size
        size = (self.image.geometry.height, self.image.geometry.width) if self.image else None
        if payload.form == NAMED:
            names = [s.name for s in specs]
            unknown = [k for k in payload.tensors if k not in names]
            missing = [n for n in names if n not in payload.tensors]
            if unknown or missing:
                raise BadRequest(
                    f"jsonData needs one entry per input name ({', '.join(names)}); "
                    + (f"unknown: {', '.join(map(str, unknown))}" if unknown else f"missing: {', '.join(missing)}")
                )
            return {s.name: as_input(s, payload.tensors[s.name], f"jsonData[{s.name!r}]") for s in specs}, size
        if len(specs) != 1:
            raise BadRequest(
                f"the model has {len(specs)} inputs ({', '.join(s.name for s in specs)}): "
                f"send jsonData with one entry per input name, or select one with input_tensor_name"
            )
        return {specs[0].name: as_input(specs[0], payload.tensors[None], payload.form)}, size


def as_input(spec: TensorSpec, array: np.ndarray, form: str) -> np.ndarray:
    """The array as the input tensor `spec` needs it, or a BadRequest naming the expected shape and dtype.

    A missing leading batch dimension of 1 is added. Integer inputs accept only whole numbers in the dtype's
    range; a tftensor must carry the input's own dtype.
    """
    expected = f"input {spec.name} expects shape {list(spec.shape)} of {spec.dtype.name}"
    shape = array.shape
    if len(shape) == len(spec.shape) - 1 and spec.shape[0] == 1:
        array = array[np.newaxis]
    if len(array.shape) != len(spec.shape) or any(s not in (d, -1) for d, s in zip(array.shape, spec.shape)):
        raise BadRequest(f"{expected}; {form} has shape {list(shape)}")
    if array.dtype == spec.dtype:
        return array
    if form == "tftensor":
        raise BadRequest(f"{expected}; tftensor has dtype {array.dtype.name}")
    if spec.dtype.kind in "iu":
        info = np.iinfo(spec.dtype)
        if array.dtype.kind == "f" and not np.array_equal(array, np.rint(array)):
            raise BadRequest(f"{expected}: whole numbers from {info.min} to {info.max}; {form} has fractions")
        if array.size and (array.min() < info.min or array.max() > info.max):
            raise BadRequest(
                f"{expected}: values from {info.min} to {info.max}; {form} has {array.min()}..{array.max()}"
            )
    return array.astype(spec.dtype)


def _object_stores(settings: Settings) -> tuple[ImageStore, ObjectRef | None]:
    """image_store and uncertain_store, checked at start."""
    stores = {}
    for name in ("image_store", "uncertain_store"):
        try:
            stores[name] = parse_store(getattr(settings, name))
        except ValueError as e:
            raise ModelLoadError(f"parameter {name}: {e}; expected s3://bucket/prefix/") from None
    if len(stores["uncertain_store"]) > 1:
        raise ModelLoadError("parameter uncertain_store: expected one s3://bucket/prefix/, got several")
    image_store = ImageStore(stores["image_store"], settings.max_request_bytes, settings.image_store_timeout)
    return image_store, next(iter(stores["uncertain_store"]), None)
