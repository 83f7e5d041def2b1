"""The model, whatever protocol asks: its parameters and checks at start, then payload -> tensors -> runtime ->
outputs -> post-processing, for Seldon's v1 protocol and the Open Inference Protocol alike.

`EdgeModel(...)` runs once in the server's main process, before any worker is forked: it checks every
parameter and reads the model's signature, so that a model that cannot load stops the process with one
line. `load()` runs in each process that serves and creates its pool of inference slots. What belongs to the
model's files (the pool, the labels' post-processing, where they came from) is a ModelVersion, which an in-place
update (core/updates.py) replaces while the server runs; the signature, and everything built from it, stays.
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from ..data_loop.escalation import AT_EDGE, Escalator
from ..data_loop.image_store import ImageStore, ObjectRef, parse_store
from ..data_loop.spool import uncertain_sender
from ..errors import BadRequest, EdgeError, ModelLoadError, Unavailable
from ..metrics import INFERENCE, MODEL_INFO, POSTPROCESS, PREPROCESS, MetricsBatch, RequestMetrics, counter
from ..process_tuning import adaptive_concurrency, available_cpus
from ..runtimes.base import ModelRuntime, ModelSignature, TensorSpec, select
from ..settings import Settings
from . import postprocess, uncertainty
from .check_input import read_check_input
from .images import ImagePreprocessor, check_opencv_cap, decode_image
from .modelfiles import find_model, local_model_dir, model_provenance, read_labels
from .payload import IMAGE, NAMED, Payload, Prediction
from .updates import Candidate, ModelUpdater, model_source, signature_change
from .version import ModelVersion


class EdgeModel:
    """One model on one runtime, checked at start, answering predictions from a pool of inference slots.

    `runtime_class` is the runtime behind the seam (edgeservers/runtimes/base.py); `concurrent_requests` how
    many requests the serving process may run at once (the defaults of pool_size and num_threads follow);
    `hand_over` gives metrics to the server's at once, for what happens off any request (uploads, updates);
    `server` names the server in messages (TFLiteServer, OpenVINOServer).
    """

    def __init__(
        self,
        runtime_class: type[ModelRuntime[Any]],
        parameters: Mapping[str, Any],
        concurrent_requests: int,
        hand_over: Callable[[list[dict]], None],
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
        self.hand_over = hand_over
        model_dir = local_model_dir(settings.model_uri, settings.model_cache_dir)
        model_path = find_model(model_dir, runtime_class.model_suffixes)
        self.update_source = model_source(settings, model_dir, runtime_class.model_suffixes)
        inputs, outputs = runtime_class.inspect(model_path, self.options)
        self.signature = ModelSignature(
            inputs=select(inputs, settings.input_names, "input"),
            outputs=select(outputs, settings.output_names, "output"),
        )
        labels = self._labels(model_path)
        self.image, self.not_image = self._image_preprocessor()
        self.postprocess_kind = postprocess.resolve(settings.postprocess, self.signature.outputs, labels)
        if self.postprocess_kind in ("detection", "segmentation") and self.image is None:
            raise ModelLoadError(f"postprocess={self.postprocess_kind} needs an image input: {self.not_image}")
        provenance = self.update_source.baseline() if self.update_source else model_provenance(model_dir)
        self._version = self._version_of(model_path, labels, provenance)
        self.check_input = read_check_input(settings.model_check_input, model_path.parent, self.image is not None)
        if self.check_input is not None:
            try:
                self._inputs(self.check_input.payload)
            except EdgeError as e:
                raise ModelLoadError(f"parameter model_check_input={settings.model_check_input!r}: {e}") from None
        self.image_store, uncertain_prefix = _object_stores(settings)
        self.uncertain = (
            uncertain_sender(uncertain_prefix, settings, lambda key: hand_over([counter(key)]))
            if uncertain_prefix
            else None
        )
        self.is_uncertain = uncertainty.criterion(settings, self.postprocess_kind)
        self.escalator = Escalator.from_settings(settings, self.postprocess_kind)
        self.metrics_batch = MetricsBatch(settings.metrics_interval, self._version.info_metrics())
        self.updater: ModelUpdater | None = None  # started by load() when model_poll_interval is set

    def _labels(self, model_path: Path) -> list[str] | None:
        """The labels of the model file `model_path` (at start, and for each update)."""
        return read_labels(model_path, self.settings.labels, self.settings.label_names)

    def _image_preprocessor(self) -> tuple[ImagePreprocessor | None, str]:
        """The preprocessor for image payloads, or None and why the model cannot take images."""
        inputs = self.signature.inputs
        if len(inputs) != 1:
            return None, f"the model has {len(inputs)} inputs ({', '.join(i.name for i in inputs)})"
        try:
            return ImagePreprocessor(inputs[0], self.settings), ""
        except ModelLoadError as e:
            return None, str(e)

    def _version_of(
        self, model_path: Path, labels: Sequence[str] | None, provenance: Mapping[str, str]
    ) -> ModelVersion:
        """The model's files at `model_path` with the labels' post-processing, not yet loaded."""
        runtime, options = self.runtime_class, self.options
        return ModelVersion(
            model_path,
            dict(provenance),
            labels,
            postprocess.build(self.postprocess_kind, self.signature.outputs, labels, self.settings),
            runtime.precision(model_path, options),
            runtime.report(model_path, options),
            runtime.info_metrics(model_path, options),
        )

    # --- what it is

    @property
    def model_path(self) -> Path:
        return self._version.model_path

    @property
    def labels(self) -> Sequence[str] | None:
        return self._version.labels

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
        """The version Open Inference Protocol clients see: model_version when set, else that of the model's files
        serving (their sha256 prefix), else none."""
        return self.settings.model_version or self._version.version

    @property
    def live(self) -> ModelVersion:
        """The version of the model's files that new requests get."""
        return self._version

    @property
    def has_answer(self) -> bool:
        """Whether a post-processing turns outputs into an answer (labels, boxes, regions)."""
        return self.postprocess_kind != "none"

    @property
    def input_elements(self) -> int | None:
        """The values of all its inputs together; None when a dimension is dynamic."""
        if any(d < 1 for spec in self.signature.inputs for d in spec.shape):
            return None
        return sum(math.prod(spec.shape) for spec in self.signature.inputs)

    @property
    def loaded(self) -> bool:
        return self._version.runtime is not None

    def describe(self) -> dict[str, str]:
        """How the model runs, as strings (metadata's `custom`)."""
        return {
            "postprocess": self.postprocess_kind,
            "inference_precision": self._version.precision,
            "image_input": "yes" if self.image else f"no: {self.not_image}",
            "pool_size": str(self.settings.pool_size),
            "num_threads": str(self.settings.num_threads),
            "slot_threads": ",".join(map(str, self.runtime_class.slot_threads(self.options, self.cpus))),
            **self._version.provenance,
            **self._version.report,
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
        one, and model_check_input (a ModelLoadError when either fails); start its upload and update threads."""
        self._version = self._with_pool(self._version)
        if self.uncertain is not None:
            self.uncertain.start()
        if self.update_source is not None:
            self.updater = ModelUpdater(
                self.update_source, self, self.settings.model_poll_interval, self.hand_over
            ).start()

    def _with_pool(self, version: ModelVersion) -> ModelVersion:
        """`version` with its pool, which has run the warm-up inference and model_check_input."""
        try:
            version = replace(
                version, runtime=self.runtime_class(version.model_path, self.options, self.signature, self.cpus)
            )
            version.infer(self._zeros())
            if self.check_input is not None:
                inputs, image_size = self._inputs(self.check_input.payload)
                outputs = version.infer(inputs)
                answer = None
                if self.check_input.payload.form == IMAGE and version.postprocessor is not None:
                    answer = version.postprocessor(outputs, image_size)
                self.check_input.verify(self.signature, outputs, answer)
        except ModelLoadError:
            raise
        except Exception as e:  # the runtime's own errors (RuntimeError, ValueError, MemoryError, ...)
            raise ModelLoadError(f"{version.model_path.name} failed its first inference: {e}") from None
        return version

    # --- in-place updates (core/updates.py calls these from its thread)

    def prepare_update(self, candidate: Candidate) -> ModelVersion:
        """The new version's files loaded beside the version serving and ready to serve, or a ModelLoadError
        saying why they cannot: its tensors must be those the server was built for (the pre- and post-processing,
        metadata and limits follow them); its labels may change."""
        model_path = find_model(candidate.path, self.runtime_class.model_suffixes)
        inputs, outputs = self.runtime_class.inspect(model_path, self.options)
        signature = ModelSignature(
            inputs=select(inputs, self.settings.input_names, "input"),
            outputs=select(outputs, self.settings.output_names, "output"),
        )
        if signature != self.signature:
            raise ModelLoadError(signature_change(self.signature, signature))
        labels = self._labels(model_path)
        kind = postprocess.resolve(self.settings.postprocess, signature.outputs, labels)
        if kind != self.postprocess_kind:
            raise ModelLoadError(
                f"postprocess=auto would be {kind} for it, not {self.postprocess_kind}: labels changed"
            )
        version = self._version_of(model_path, labels, candidate.provenance)
        return self._with_pool(replace(version, directory=candidate.path if candidate.owned else None))

    def swap(self, version: ModelVersion) -> ModelVersion:
        """Serve `version` to new requests from now on (requests in flight finish on theirs); the old one back.
        The model_info gauges go to the server at once (the old version's, if still waiting, never)."""
        old, self._version = self._version, version
        self.metrics_batch.withdraw(MODEL_INFO)
        self.hand_over([*old.info_metrics(serving=False), *version.info_metrics()])
        return old

    def release_inspected(self) -> None:
        """This process will not load the model (a REST arbiter, whose workers load their own)."""
        self.runtime_class.release_inspected()

    def health(self) -> dict[str, Any]:
        """Healthy only if a real inference runs (on zeros of each input's shape and dtype)."""
        version = self._serving()
        start = time.perf_counter()
        version.infer(self._zeros())
        return {
            "status": "ok",
            "model": version.model_path.stem,
            "runtime": self.runtime_class.name,
            "inference_ms": round((time.perf_counter() - start) * 1000.0, 3),
        }

    def predict(
        self, payload: Payload, wants_answer: bool, metrics: RequestMetrics, image_uri: str | None = None
    ) -> Prediction:
        """payload -> tensors -> runtime -> outputs -> post-processing; records `metrics` and sends an
        uncertain image home when uncertain_store is set (`image_uri`: where it came from, if fetched) and asks the
        bigger model when escalate_url is set."""
        version = self._serving()  # this request's, to the end, even when an update swaps the model meanwhile
        with metrics.timed(PREPROCESS):
            inputs, image_size = self._inputs(payload)
        with metrics.timed(INFERENCE):
            outputs = version.infer(inputs)
        answer = None
        if wants_answer and version.postprocessor is not None:
            with metrics.timed(POSTPROCESS):
                answer = version.postprocessor(outputs, image_size)
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
        return Prediction(outputs, answer, uncertain, escalation, self.settings.model_version or version.version)

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

    def _serving(self) -> ModelVersion:
        version = self._version
        if version.runtime is None:
            raise Unavailable("the model is not loaded yet in this worker: retry shortly")
        return version

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
