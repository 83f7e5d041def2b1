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
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, NoReturn

import numpy as np
from seldon_core.proto import prediction_pb2
from seldon_core.user_model import SeldonComponent

from . import codecs, oip, postprocess, seldon_compat
from .errors import BadRequest, ModelLoadError, TooLarge, Unavailable
from .http_worker import RestOptions
from .image_store import ImageStore, ObjectRef, parse_store
from .images import ImagePreprocessor, check_opencv_cap, decode_image
from .metrics import INFERENCE, POSTPROCESS, PREPROCESS, MetricsBatch, RequestMetrics
from .modelfiles import find_model, local_model_dir, model_provenance, read_labels
from .runtime import ModelRuntime, ModelSignature, select
from .settings import Settings, adaptive_concurrency, available_cpus
from .uncertain import UncertainUploader


def _count_now(key: str) -> None:
    """Add 1 to the counter `key` in Seldon's metrics at once (from a background thread: no response carries it)."""
    seldon_compat.hand_over_metrics([{"type": "COUNTER", "key": key, "value": 1}])


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

    runtime_class: ClassVar[type[ModelRuntime[Any]]]

    def __init__(self, **parameters: Any):
        super().__init__()
        try:
            self._prepare(parameters)
        except ModelLoadError as e:
            _stop(type(self).__name__, e, code=1)
        self._runtime: ModelRuntime[Any] | None = None
        self._metrics = MetricsBatch(
            self._settings.metrics_interval, self.runtime_class.info_metrics(self._model_path, self._options)
        )
        self._uncertain = self._uncertain_uploader()
        seldon_compat.install()  # here, in the main process, so every forked worker has it
        # What the REST worker enforces (edgeservers/http_worker.py); read by the wrapper's gunicorn applications.
        self.rest_options = self._rest_options()
        seldon_compat.configure_rest(self.rest_options)
        # The one blueprint Seldon's wrapper registers on its REST app (see seldon_compat), with the
        # Open Inference Protocol's routes; its gRPC service joins Seldon's on the gRPC port.
        self.model_error_handler = seldon_compat.rest_blueprint(oip.rest_routes(self))
        seldon_compat.add_grpc_services(oip.grpc_registrar(self))

    def _prepare(self, parameters: Mapping[str, Any]) -> None:
        self._cpus = available_cpus()
        defaults = adaptive_concurrency(seldon_compat.concurrent_requests(), self._cpus)
        settings = Settings.from_parameters(parameters, defaults)
        self._settings = settings
        if settings.inference_precision not in self.runtime_class.precisions:
            raise ModelLoadError(
                f"parameter inference_precision={settings.inference_precision!r}: expected one of "
                f"{', '.join(self.runtime_class.precisions)} for {type(self).__name__}"
            )
        check_opencv_cap(settings.max_image_pixels)
        self._options = self.runtime_class.options_class.from_settings(settings)
        model_dir = local_model_dir(settings.model_uri, settings.model_cache_dir)
        self._model_path = find_model(model_dir, self.runtime_class.model_suffixes)
        self._provenance = model_provenance(model_dir)
        inputs, outputs = self.runtime_class.inspect(self._model_path, self._options)
        self._precision = self.runtime_class.precision(self._model_path, self._options)
        self._signature = ModelSignature(
            inputs=select(inputs, settings.input_names, "input"),
            outputs=select(outputs, settings.output_names, "output"),
        )
        self._labels = labels = read_labels(self._model_path, settings.labels)
        self._image, self._not_image = self._image_preprocessor()
        self._postprocess_kind = postprocess.resolve(settings.postprocess, self._signature.outputs, labels)
        if self._postprocess_kind in ("detection", "segmentation") and self._image is None:
            raise ModelLoadError(f"postprocess={self._postprocess_kind} needs an image input: {self._not_image}")
        self._postprocessor = postprocess.build(self._postprocess_kind, self._signature.outputs, labels, settings)
        self.max_response_bytes = settings.max_response_bytes or max(
            settings.max_request_bytes, 2 * sum(oip.json_size(spec) for spec in self._signature.outputs)
        )
        self._object_stores(settings)

    def _object_stores(self, settings: Settings) -> None:
        """image_store and uncertain_store, checked at start."""
        stores = {}
        for name in ("image_store", "uncertain_store"):
            try:
                stores[name] = parse_store(getattr(settings, name))
            except ValueError as e:
                raise ModelLoadError(f"parameter {name}: {e}; expected s3://bucket/prefix/") from None
        if len(stores["uncertain_store"]) > 1:
            raise ModelLoadError("parameter uncertain_store: expected one s3://bucket/prefix/, got several")
        self._image_store = ImageStore(stores["image_store"], settings.max_request_bytes, settings.image_store_timeout)
        self._uncertain_prefix: ObjectRef | None = next(iter(stores["uncertain_store"]), None)

    def _uncertain_uploader(self) -> UncertainUploader | None:
        if self._uncertain_prefix is None:
            return None
        return UncertainUploader(self._uncertain_prefix, self._settings.uncertain_queue_size, _count_now)

    def _rest_options(self) -> RestOptions:
        s = self._settings
        elements: int | None = 0
        for spec in self._signature.inputs:
            if any(d < 1 for d in spec.shape):
                elements = None  # a dynamic dimension: only the byte limit applies
                break
            elements += int(np.prod(spec.shape))  # type: ignore[operator]
        return RestOptions(
            max_request_bytes=s.max_request_bytes,
            header_timeout=s.header_timeout,
            body_timeout=s.body_timeout,
            max_connections=s.max_connections,
            graceful_timeout=s.graceful_timeout,
            bind_address=s.bind_address,
            cors_origins=s.cors_origin_list,
            max_json_values=seldon_compat.json_values_limit(elements),
        )

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
    def settings(self) -> Settings:
        return self._settings

    @property
    def model_name(self) -> str:
        return self._model_path.stem

    # --- Seldon component interface -------------------------------------------------------

    def load(self) -> None:
        """Create this worker's inference pool and run one inference, so the first request is not the slow one."""
        try:
            self._runtime = self.runtime_class(self._model_path, self._options, self._signature, self._cpus)
            self._runtime.infer(self._zeros())
        except ModelLoadError as e:
            _stop(type(self).__name__, e, code=3)
        if self._uncertain is not None:
            self._uncertain.start()

    def release_inspected(self) -> None:
        """This process will not load the model (the wrapper's REST arbiter, whose workers load their own)."""
        self.runtime_class.release_inspected()

    def predict_raw(self, request: Any) -> Any:
        """Seldon's protocol: the request decoded, predicted and answered in the request's own form."""
        proto = isinstance(request, prediction_pb2.SeldonMessage)
        metrics = RequestMetrics()
        with metrics.timed(PREPROCESS):
            payload = codecs.decode_grpc(request) if proto else codecs.decode_rest(request)
        if payload.form in codecs.REFERENCE_FORMS:
            return self._predict_references(payload, metrics, proto)
        # Images get the model's post-processing; tensors get raw outputs unless one was asked for explicitly.
        wants_answer = payload.form == "image" or self._settings.postprocess != "auto"
        prediction = self.predict_payload(payload, wants_answer, metrics)
        meta = {"tags": self.tags(prediction.uncertain), "metrics": self.metrics()}
        return codecs.encode(payload.form, prediction.outputs, prediction.answer, meta, proto)

    def _predict_references(self, payload: codecs.Payload, metrics: RequestMetrics, proto: bool) -> Any:
        """Images named by URI (jsonData.image_uri, S3 event records): their number and every URI are checked
        against max_event_records and image_store before any is fetched, and all are fetched within one
        image_store_timeout; each image is then predicted as if its bytes had been sent."""
        limit = self._settings.max_event_records
        if len(payload.image_uris) > limit:
            raise TooLarge(
                f"the notification names {len(payload.image_uris)} objects, more than max_event_records={limit} "
                "(the parameter sets it): send fewer records per notification"
            )
        refs = [self._image_store.check(uri) for uri in payload.image_uris]
        deadline = self._image_store.deadline()
        answers = []
        for i, ref in enumerate(refs):
            image = codecs.Payload("image", image=self._image_store.fetch(ref, deadline), tags=payload.tags)
            prediction = self.predict_payload(image, True, metrics if i == 0 else RequestMetrics(), ref.uri)
            if payload.form == "image_uri":
                tags = {**self.tags(prediction.uncertain), "image_uri": ref.uri}
                meta = {"tags": tags, "metrics": self.metrics()}
                return codecs.encode("image", prediction.outputs, prediction.answer, meta, proto)
            answer: dict[str, Any] = {"image_uri": ref.uri, "answer": self._plain(prediction)}
            if prediction.uncertain is not None:
                answer["uncertain"] = prediction.uncertain
            answers.append(answer)
        return codecs.encode_batch(answers, {"tags": self.tags(), "metrics": self.metrics()}, proto)

    @staticmethod
    def _plain(prediction: Prediction) -> Any:
        """An answer inside a list of answers: the post-processed body, else the outputs as lists."""
        if prediction.answer is not None:
            return prediction.answer.body
        return {name: array.tolist() for name, array in prediction.outputs.items()}

    def predict_payload(
        self, payload: codecs.Payload, wants_answer: bool, metrics: RequestMetrics, image_uri: str | None = None
    ) -> Prediction:
        """payload -> tensors -> runtime -> outputs -> post-processing, for any protocol; records `metrics`
        and sends an uncertain image home when uncertain_store is set."""
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
        if uncertain and self._uncertain is not None and payload.form == "image":
            self._send_home(payload, answer, image_uri)
        return Prediction(outputs, answer, uncertain)

    def _send_home(self, payload: codecs.Payload, answer: postprocess.Answer | None, image_uri: str | None) -> None:
        """Queue an uncertain image (bytes as received) and what the model said of it for uploading."""
        assert self._uncertain is not None and answer is not None
        sidecar = {
            "model": self.model_name,
            "runtime": self.runtime_class.name,
            "answer": answer.body,
            "score": answer.top_score,
            "confidence_threshold": self._settings.confidence_threshold,
            "request_id": str(payload.tags.get("request_id") or uuid.uuid4().hex),
            "tags": payload.tags,
            "image_uri": image_uri,
        }
        self._uncertain.submit(payload.image, sidecar)

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
        hand this worker's request metrics over under the "health" method label. 503 naming the part
        while any part of the server is down (see seldon_compat.unavailable)."""
        down = seldon_compat.unavailable()
        if down:
            raise Unavailable("not ready: " + "; ".join(down))
        return {"jsonData": self.health_status()}

    def init_metadata(self) -> dict[str, Any]:
        return {
            "name": self.model_name,
            "platform": self.runtime_class.name,
            "inputs": [spec.describe() for spec in self._signature.inputs],
            "outputs": [spec.describe() for spec in self._signature.outputs],
            "custom": {
                "postprocess": self._postprocess_kind,
                "inference_precision": self._precision,
                "image_input": "yes" if self._image else f"no: {self._not_image}",
                "pool_size": str(self._settings.pool_size),
                "num_threads": str(self._settings.num_threads),
                "slot_threads": ",".join(map(str, self.runtime_class.slot_threads(self._options, self._cpus))),
                **self._provenance,
                **self.runtime_class.report(self._model_path, self._options),
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

    def _loaded(self) -> ModelRuntime[Any]:
        if self._runtime is None:
            raise Unavailable("the model is not loaded yet in this worker: retry shortly")
        return self._runtime

    def _zeros(self) -> dict[str, np.ndarray]:
        return {s.name: np.zeros([max(d, 1) for d in s.shape], s.dtype) for s in self._signature.inputs}

    def _inputs(self, payload: codecs.Payload) -> tuple[dict[str, np.ndarray], tuple[int, int] | None]:
        """Input tensors by name, and the (height, width) that detected boxes and masks refer to."""
        specs = self._signature.inputs
        if payload.form == "image":
            if self._image is None:
                raise BadRequest(f"this model does not take images ({self._not_image}): send tensors instead")
            fit = (self._image.geometry.height, self._image.geometry.width)
            pixels, image_size = decode_image(payload.image, self._settings.max_image_pixels, payload.image_field, fit)
            return {self._image.spec.name: self._image(pixels)}, image_size
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
