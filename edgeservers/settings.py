"""The servers' parameters: what Seldon passes (PREDICTIVE_UNIT_PARAMETERS / --parameters), checked once at start.

Seldon has already converted each value to its declared type (INT, FLOAT, BOOL, STRING); values
given as STRING are accepted too, so a typo in a manifest's type gets a clear error here.
"""

from __future__ import annotations

import ipaddress
import os
import typing
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field, fields
from typing import Any

from .errors import ModelLoadError
from .storage import is_remote

POSTPROCESSORS = ("auto", "none", "classification", "detection", "segmentation")
INPUT_SCALES = ("auto", "0..1", "-1..1", "0..255", "mean_std")
CHANNEL_ORDERS = ("RGB", "BGR")
LAYOUTS = ("auto", "NHWC", "NCHW")
# Float precisions a runtime may compute in; each runtime accepts its own subset (ModelRuntime.precisions).
PRECISIONS = ("f32", "auto", "bf16", "f16")
# What TFLiteServer does when its delegate cannot run the model: stop at start, or run on the CPU.
DELEGATE_FALLBACKS = ("fail", "cpu")
# What makes an answer uncertain, given confidence_threshold (core/uncertainty.py, docs/pipelines.md).
UNCERTAINTY_CRITERIA = ("top1", "margin", "entropy", "weak_boxes")

# The face-mask detector's anchor layout (../models/README.md): the defaults of postprocess=detection.
FACE_MASK_FEATURE_MAPS = "33,17,9,5,3"
FACE_MASK_ANCHOR_SIZES = "0.04,0.056;0.08,0.11;0.16,0.22;0.32,0.45;0.64,0.72"
FACE_MASK_ANCHOR_RATIOS = "1,0.62,0.42"
FACE_MASK_BOX_VARIANCES = "0.1,0.1,0.2,0.2"


def _floats(text: str, what: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise ModelLoadError(f"parameter {what}={text!r}: expected comma-separated numbers") from None


def _names(text: str) -> tuple[str, ...]:
    return tuple(n.strip() for n in text.split(",") if n.strip())


# Sections of docs/parameters.md, in its order: each field names one (param(section=...)).
MODEL = "Model"
ANSWERS = "Answers"
IMAGES = "Image payloads"
DETECTION = "Detection"
SEGMENTATION = "Segmentation"
RUNTIME = "Runtime"
LIMITS = "Limits and exposure"
DATA_LOOP = "Data loop"
SECTIONS = (MODEL, ANSWERS, IMAGES, DETECTION, SEGMENTATION, RUNTIME, LIMITS, DATA_LOOP)


def param(default: Any = MISSING, *, section: str, doc: str, shown: str = "", factory: Any = None) -> Any:
    """A Settings field with what docs/parameters.md says of it: its section, its meaning (`doc`) and, when the
    default is computed or needs words, how the default reads (`shown`)."""
    metadata = {"section": section, "doc": doc, "shown": shown}
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass(frozen=True)
class Settings:
    """Every parameter the servers take, with its default and meaning (docs/parameters.md is generated from these)."""

    model_uri: str = field(
        metadata={
            "section": MODEL,
            "shown": "required",
            "doc": "a model file, or a directory searched (recursively) for one: `*.tflite` for TFLite; for OpenVINO an "
            "IR `*.xml` + `*.bin`, else `*.onnx`, else `*.tflite`. `s3://`, `https://` and `http://` URIs are "
            "downloaded at start (`.zip`, `.tar`, `.tar.gz` unpacked) within the storage initializer's limits "
            "([storage-initializer/README.md](../storage-initializer/README.md)); for GCS use its S3 API "
            "(`s3://` with `AWS_ENDPOINT_URL=https://storage.googleapis.com` and an HMAC key). No model found, or two "
            "of one kind: the server stops, naming the directory and what it holds. Under the operator: `/mnt/models`",
        }
    )
    model_cache_dir: str = param(
        section=MODEL,
        factory=lambda: os.environ.get("STORAGE_CACHE_DIR", "").strip(),
        shown="env `STORAGE_CACHE_DIR`, else none",
        doc="a node-local cache for a remote `model_uri` ([kubernetes.md](kubernetes.md#offline-the-node-local-model-cache))",
    )
    model_poll_interval: float = param(
        0.0,
        section=MODEL,
        shown="0: never",
        doc="seconds between looks at `model_uri` for a new model, swapped in without a restart while the requests in "
        "flight finish on the old one ([kubernetes.md](kubernetes.md#in-place-model-updates)); a remote `model_uri` "
        "needs `model_cache_dir`",
    )
    model_update_uri: str = param(
        "",
        section=MODEL,
        shown="`model_uri`",
        doc="where `model_poll_interval` looks for new versions when `model_uri` is a local copy: the `s3://` or "
        "`https://` source the storage initializer filled it from (the edge-model chart sets it to `modelUri`); "
        "needs `model_cache_dir`",
    )
    model_check_input: str = param(
        "",
        section=MODEL,
        doc="an image (`.jpg`, `.png`, `.bmp`) or tensors (`.npy` for the one input, `.npz` by input name) that the "
        "model, and each update before it serves, must answer: every output with its shape, no NaN, and an answer "
        "that is not empty (a class scoring above 0, a detection, a region). A relative path: beside the model, then "
        "the working directory",
    )
    model_name: str = param(
        "",
        section=MODEL,
        shown="the model file's stem",
        doc="the Open Inference Protocol's model name (`/v2/models/{name}`)",
    )
    model_version: str = param(
        "",
        section=MODEL,
        shown="the model files' sha256 prefix when known, else none",
        doc="the Open Inference Protocol's model version (`/v2/models/{name}/versions/{v}`). Unset, the version of the "
        "files served when the server knows it (a model the storage initializer or the server downloaded, or any "
        "model with `model_poll_interval`), so that versions follow an in-place update; else none, and a versioned "
        "URL answers 404",
    )
    input_tensor_name: str = param(
        "",
        section=MODEL,
        shown="every input",
        doc="comma-separated input names to feed; an unknown name stops the server, listing the model's names",
    )
    output_tensor_name: str = param(
        "",
        section=MODEL,
        shown="every output",
        doc="comma-separated output names to return and post-process",
    )
    labels: str = param(
        "",
        section=MODEL,
        shown="`labels.txt` beside the model, if there is one",
        doc="a labels file, one label per line, line N = class N (a relative path: beside the model, then the "
        "working directory)",
    )
    label_names: str = param(
        "",
        section=MODEL,
        doc="the labels themselves, comma-separated in class order (`Mask,NoMask`), for a model fetched without a "
        "labels file; not with `labels`",
    )
    top_k: int = param(5, section=ANSWERS, doc="classification: how many labels, best first")
    postprocess: str = param(
        "auto",
        section=ANSWERS,
        doc="`classification`, `detection`, `segmentation` or `none` ([protocols.md](protocols.md#post-processing)); "
        "`auto`: classification when the model has one output and labels, else none",
    )
    confidence_threshold: float | None = param(
        None,
        section=ANSWERS,
        doc="answers below it (per `uncertainty`) are tagged `uncertain` and counted "
        "(`edgeservers_uncertain_predictions_total`), and can go home (`uncertain_store`) or to a bigger model "
        "(`escalate_url`); with it set every answer carries the `uncertain` tag",
    )
    num_threads: int = param(
        section=RUNTIME,
        factory=lambda: os.cpu_count() or 1,
        shown="adaptive: the CPUs",
        doc="threads per inference: TFLite interpreter threads (those of the first slot, which a request alone always "
        "gets; each further slot gets its share, CPUs / `pool_size`), OpenVINO `INFERENCE_NUM_THREADS`",
    )
    pool_size: int = param(
        1,
        section=RUNTIME,
        shown="adaptive: the requests one process runs at once (`GUNICORN_THREADS`, plus `GRPC_THREADS` with gRPC "
        "on), at most the CPUs",
        doc="inferences that may run at once in one process: TFLite interpreters, or OpenVINO infer requests on one "
        "compiled model. The CPUs are the process's affinity capped by its cgroup quota (`limits.cpu`); "
        "`/api/v1.0/metadata` (`custom`) shows the values chosen",
    )
    metrics_interval: float = param(
        1.0,
        section=LIMITS,
        doc="seconds between hand-overs of the request metrics to Seldon's Prometheus endpoint (each costs IPC round "
        "trips); 0: every request. Prometheus lags by up to this",
    )
    max_request_bytes: int = param(
        16 << 20,
        section=LIMITS,
        shown="16777216 (16 MiB)",
        doc="the largest request: REST answers 413 before the body is kept (a 12 MP camera JPEG as base64 JSON is "
        "about 8 MiB); gRPC refuses a larger message with `RESOURCE_EXHAUSTED` and caps replies at the same size; "
        "also the largest image fetched by reference. At most 2147483647",
    )
    max_image_pixels: int = param(
        40_000_000,
        section=LIMITS,
        doc="the largest image (width x height) decoded, read from its JPEG, PNG or BMP header first; larger ones "
        "answer 413. Decoding costs about 5 bytes per pixel while it runs (a 39.9 MP image: +214 MB): on a 512Mi pod "
        "serving several requests at once, lower it. Other formats are capped by OpenCV at "
        "`OPENCV_IO_MAX_IMAGE_PIXELS` (set to the same default)",
    )
    max_response_bytes: int = param(
        0,
        section=LIMITS,
        shown="0: the larger of `max_request_bytes` and twice every output as JSON",
        doc="the largest Open Inference Protocol response: a request whose outputs would make a larger one answers "
        "413 before it is built",
    )
    image_store: str = param(
        "",
        section=DATA_LOOP,
        doc='comma-separated `s3://bucket/prefix/` the server may fetch images from (`jsonData: {"image_uri": ...}`, '
        "S3 bucket notifications, CloudEvents: [pipelines.md](pipelines.md#1-images-by-reference)); unset: references "
        "are refused",
    )
    uncertain_store: str = param(
        "",
        section=DATA_LOOP,
        doc="`s3://bucket/prefix/` where uncertain images and a JSON sidecar are uploaded in the background (needs "
        "`confidence_threshold`)",
    )
    image_store_timeout: float = param(
        10.0,
        section=DATA_LOOP,
        doc="seconds for all of one request's fetches from `image_store`; past it 504 (503 when the store is "
        "unreachable, 502 when it answers an error)",
    )
    max_event_records: int = param(
        16,
        section=DATA_LOOP,
        doc="objects one bucket notification may name; more answer 413 before any is fetched",
    )
    uncertain_queue_size: int = param(
        32,
        section=DATA_LOOP,
        doc="uncertain images waiting per process (for the upload, or for the disk with `uncertain_spool_dir`); "
        "beyond it they are dropped and counted (`edgeservers_uncertain_dropped_total`)",
    )
    uncertain_spool_dir: str = param(
        "",
        section=DATA_LOOP,
        shown="unset: in memory only",
        doc="a directory where uncertain images wait on disk for `uncertain_store`, through outages and restarts "
        "([pipelines.md](pipelines.md#the-offline-site-a-spool-on-disk))",
    )
    uncertain_spool_max_bytes: int = param(
        256 << 20,
        section=DATA_LOOP,
        shown="268435456 (256 MiB)",
        doc="the most the spool holds; beyond it the oldest images are evicted (`edgeservers_uncertain_evicted_total`)",
    )
    # 10,000 files: a day offline at one uncertain frame every 10 s (8,640); the byte cap binds first for camera
    # frames over 27 KB, this one for tiny images, and keeps the directory quick to list on an SD card.
    uncertain_spool_max_files: int = param(
        10_000,
        section=DATA_LOOP,
        doc="the most images the spool holds (a day at one uncertain frame every 10 s)",
    )
    uncertainty: str = param(
        "top1",
        section=ANSWERS,
        doc="what makes an answer uncertain against `confidence_threshold`: `top1` (the top score), `margin` (the top "
        "two closer than it), `entropy` (a flat distribution), `weak_boxes` (detection: at least `weak_box_fraction` "
        "of the boxes below it) ([pipelines.md](pipelines.md#what-is-uncertain))",
    )
    weak_box_fraction: float = param(
        0.5,
        section=ANSWERS,
        doc="`uncertainty=weak_boxes`: the share of boxes below the threshold that makes a detection uncertain",
    )
    escalate_url: str = param(
        "",
        section=DATA_LOOP,
        doc="the Open Inference Protocol URL (`http(s)://host:port/v2/models/NAME[/versions/V][/infer]`) of a bigger "
        "model that answers uncertain images instead "
        "([pipelines.md](pipelines.md#3-two-tiers-a-bigger-model-for-the-hard-cases))",
    )
    escalate_timeout: float = param(
        2.0, section=DATA_LOOP, doc="seconds for one escalation, all of it; past it the edge answers"
    )
    escalate_headers_file: str = param(
        "",
        section=DATA_LOOP,
        doc="a file of `Name: value` lines sent with every escalation (credentials); never logged",
    )
    escalate_breaker_failures: int = param(
        3, section=DATA_LOOP, doc="escalations failed in a row that open the circuit breaker"
    )
    escalate_breaker_cooldown: float = param(
        30.0, section=DATA_LOOP, doc="seconds the open breaker tries no escalation; then one trial call"
    )
    max_connections: int = param(
        1000, section=LIMITS, doc="open REST connections per process; one more is answered 503 and closed"
    )
    header_timeout: float = param(
        10.0,
        section=LIMITS,
        doc="seconds for a request line and all its headers, in total (also how long a kept-alive connection may idle)",
    )
    body_timeout: float = param(60.0, section=LIMITS, doc="seconds for a whole request body (16 MiB at 2.2 Mbit/s)")
    graceful_timeout: float = param(
        20.0,
        section=LIMITS,
        doc="seconds to finish the requests received after SIGTERM; keep it below the pod's "
        "`terminationGracePeriodSeconds` (30)",
    )
    bind_address: str = param(
        "0.0.0.0",
        section=LIMITS,
        doc="the IP address REST, metrics and gRPC listen on (`127.0.0.1`: this host only, `::` for IPv6; Kubernetes "
        "probes need the default)",
    )
    cors_origins: str = param(
        "",
        section=LIMITS,
        shown="unset: no CORS headers",
        doc="comma-separated origins a browser page may call from (`*`: any)",
    )
    grpc_reflection: bool = param(
        False, section=LIMITS, doc="serve gRPC server reflection (lets any client list the services)"
    )
    input_scale: str = param(
        "auto",
        section=IMAGES,
        doc="how 0..255 pixels become the model's input: `0..1`, `-1..1`, `0..255`, `mean_std` (with `input_mean`, "
        "`input_std`). `auto`: float inputs `0..1`; quantized inputs take the pixels as their quantized values. With "
        "an explicit scale, quantized inputs get `round(real / scale + zero_point)`",
    )
    input_mean: str = param("127.5", section=IMAGES, doc="`input_scale=mean_std`: one value or one per channel")
    input_std: str = param(
        "127.5", section=IMAGES, doc="`input_scale=mean_std`: one value or one per channel, e.g. `58.4,57.1,57.4`"
    )
    channel_order: str = param("RGB", section=IMAGES, doc="`BGR` for models trained on OpenCV/Caffe order")
    input_layout: str = param(
        "auto", section=IMAGES, doc="`NHWC` or `NCHW`; `auto` reads it from the shape (channels of 1 or 3)"
    )
    reduced_decode: bool = param(
        False,
        section=IMAGES,
        doc="decode a JPEG at least twice the model's input at 1/2, 1/4 or 1/8 scale (in the DCT domain): several "
        "times faster for large camera frames, but answers may differ from the model's reference preprocessing",
    )
    score_threshold: float = param(0.5, section=DETECTION, doc="the lowest class score of a detected box")
    nms_iou_threshold: float = param(0.4, section=DETECTION, doc="non-maximum suppression: the largest overlap kept")
    max_detections: int = param(100, section=DETECTION, doc="the most boxes in an answer")
    anchor_feature_maps: str = param(
        FACE_MASK_FEATURE_MAPS, section=DETECTION, doc="SSD anchors: the feature map sizes (the face-mask detector's)"
    )
    anchor_sizes: str = param(
        FACE_MASK_ANCHOR_SIZES, section=DETECTION, doc="SSD anchors: their sizes, grouped per feature map with `;`"
    )
    anchor_ratios: str = param(FACE_MASK_ANCHOR_RATIOS, section=DETECTION, doc="SSD anchors: their aspect ratios")
    box_variances: str = param(FACE_MASK_BOX_VARIANCES, section=DETECTION, doc="SSD box decoding: the four variances")
    segmentation_class: str = param(
        "",
        section=SEGMENTATION,
        shown="every non-background class",
        doc="the class (label or index) whose mask to report",
    )
    mask_threshold: float = param(0.5, section=SEGMENTATION, doc="the threshold of a one-channel probability map")
    min_region_area: int = param(1, section=SEGMENTATION, doc="smaller regions (pixels) are not counted")
    return_mask: bool = param(False, section=SEGMENTATION, doc="add the mask as a base64 PNG (`mask_png`)")
    output_layout: str = param(
        "auto",
        section=SEGMENTATION,
        doc="`NHWC` or `NCHW` for a 4-D map; `auto`: the model's own layout (OpenVINO rt_info), else the shape. A "
        "shape that could be either stops the server at start, asking for this parameter",
    )
    inference_precision: str = param(
        "f32",
        section=RUNTIME,
        doc="the precision float models are computed in: `f32` (the same answers on every CPU), `auto` (the device's "
        "fastest: OpenVINO bf16 or f16 where the CPU has it; TFLite XNNPACK's choice), `bf16`, `f16` (OpenVINO, "
        "only where the device computes in it) ([protocols.md](protocols.md#precision))",
    )
    delegate: str = param(
        "",
        section=RUNTIME,
        shown="unset: the CPU",
        doc="TFLite: an external delegate library (path or file name, e.g. `libedgetpu.so.1`) that runs the model "
        "on an accelerator ([accelerators.md](accelerators.md))",
    )
    delegate_options: str = param(
        "",
        section=RUNTIME,
        doc="the delegate's options: `key=value;key=value` or a JSON object, passed as strings (Edge TPU: "
        "`device=usb:0,usb:1`, one pool slot per device)",
    )
    delegate_fallback: str = param(
        "fail",
        section=RUNTIME,
        doc="a delegate that cannot run the model: `fail` stops the server at start with one line, `cpu` warns once "
        "and runs on the CPU",
    )
    device: str = param("CPU", section=RUNTIME, doc="OpenVINO: the device (`AUTO`, `GPU`, ... where present)")
    performance_hint: str = param(
        "LATENCY",
        section=RUNTIME,
        doc="OpenVINO: `PERFORMANCE_HINT` (`THROUGHPUT` for many parallel requests)",
    )

    @property
    def input_names(self) -> tuple[str, ...]:
        return _names(self.input_tensor_name)

    @property
    def output_names(self) -> tuple[str, ...]:
        return _names(self.output_tensor_name)

    @property
    def updates_from(self) -> str:
        """The parameter whose URI model_poll_interval looks at: model_update_uri when set, else model_uri."""
        return "model_update_uri" if self.model_update_uri else "model_uri"

    @property
    def cors_origin_list(self) -> tuple[str, ...]:
        return _names(self.cors_origins)

    @property
    def mean_std(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        return _floats(self.input_mean, "input_mean"), _floats(self.input_std, "input_std")

    @property
    def anchor_layout(
        self,
    ) -> tuple[tuple[int, ...], tuple[tuple[float, ...], ...], tuple[float, ...], tuple[float, ...]]:
        """(feature map sizes, anchor sizes per map, aspect ratios, box variances)."""
        maps = tuple(int(v) for v in _floats(self.anchor_feature_maps, "anchor_feature_maps"))
        sizes = tuple(_floats(part, "anchor_sizes") for part in self.anchor_sizes.split(";"))
        ratios = _floats(self.anchor_ratios, "anchor_ratios")
        variances = _floats(self.box_variances, "box_variances")
        if len(sizes) != len(maps) or len(variances) != 4 or not ratios:
            raise ModelLoadError(
                f"detection anchors: {len(maps)} feature maps need {len(maps)} ';'-separated anchor_sizes groups "
                f"(got {len(sizes)}), box_variances needs 4 numbers (got {len(variances)}), anchor_ratios at least one"
            )
        return maps, sizes, ratios, variances

    @classmethod
    def from_parameters(cls, parameters: Mapping[str, Any], defaults: Mapping[str, Any] | None = None) -> Settings:
        """Typed, checked settings; a ModelLoadError naming the parameter for anything wrong.

        `defaults` overrides the dataclass defaults of parameters not given (e.g. `adaptive_concurrency`).
        """
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(parameters) - set(known))
        if unknown:
            raise ModelLoadError(f"unknown parameter(s) {', '.join(unknown)}; known: {', '.join(known)}")
        if not str(parameters.get("model_uri", "")).strip():
            raise ModelLoadError("parameter model_uri is required: a model file or a directory holding one")
        given = {**(defaults or {}), **parameters}
        values = {name: _coerce(name, value, str(known[name].type)) for name, value in given.items()}
        settings = cls(**values)
        settings._check()
        return settings

    def _check(self) -> None:
        choices = {
            "postprocess": POSTPROCESSORS,
            "input_scale": INPUT_SCALES,
            "channel_order": CHANNEL_ORDERS,
            "input_layout": LAYOUTS,
            "output_layout": LAYOUTS,
            "inference_precision": PRECISIONS,
            "delegate_fallback": DELEGATE_FALLBACKS,
            "uncertainty": UNCERTAINTY_CRITERIA,
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ModelLoadError(f"parameter {name}={getattr(self, name)!r}: expected one of {', '.join(allowed)}")
        for name in (
            "top_k",
            "num_threads",
            "pool_size",
            "max_detections",
            "max_request_bytes",
            "max_image_pixels",
            "uncertain_queue_size",
            "uncertain_spool_max_bytes",
            "uncertain_spool_max_files",
            "escalate_breaker_failures",
            "max_connections",
            "max_event_records",
        ):
            if getattr(self, name) < 1:
                raise ModelLoadError(f"parameter {name}={getattr(self, name)}: expected a whole number >= 1")
        for name in (
            "header_timeout",
            "body_timeout",
            "graceful_timeout",
            "image_store_timeout",
            "escalate_timeout",
            "escalate_breaker_cooldown",
        ):
            if not getattr(self, name) > 0:
                raise ModelLoadError(f"parameter {name}={getattr(self, name)}: expected seconds > 0")
        if self.max_response_bytes < 0:
            raise ModelLoadError(
                f"parameter max_response_bytes={self.max_response_bytes}: expected bytes >= 0 (0: sized from the model)"
            )
        if self.max_request_bytes > 2**31 - 1:  # grpc takes it as a C int
            raise ModelLoadError(f"parameter max_request_bytes={self.max_request_bytes}: expected at most 2147483647")
        try:
            ipaddress.ip_address(self.bind_address)
        except ValueError:
            raise ModelLoadError(
                f"parameter bind_address={self.bind_address!r}: expected an IP address, e.g. 0.0.0.0 (all), 127.0.0.1 or ::"
            ) from None
        if self.model_poll_interval < 0:
            raise ModelLoadError(
                f"parameter model_poll_interval={self.model_poll_interval}: expected seconds >= 0 (0: no updates)"
            )
        if self.model_update_uri and not is_remote(self.model_update_uri):
            raise ModelLoadError(
                f"parameter model_update_uri={self.model_update_uri!r}: expected an s3://, https:// or http:// "
                "URI (a local model_uri is looked at itself)"
            )
        if self.model_update_uri and not self.model_poll_interval:
            raise ModelLoadError(
                "parameter model_update_uri is set but model_poll_interval is 0: set model_poll_interval to "
                "the seconds between looks, or leave model_update_uri out"
            )
        if self.model_poll_interval and is_remote(getattr(self, self.updates_from)) and not self.model_cache_dir:
            raise ModelLoadError(
                f"parameter model_poll_interval={self.model_poll_interval:g} with a remote {self.updates_from} needs "
                "the node's model cache, through which updates are checked and fetched: set model_cache_dir (or the "
                "environment variable STORAGE_CACHE_DIR)"
            )
        if self.metrics_interval < 0:
            raise ModelLoadError(f"parameter metrics_interval={self.metrics_interval}: expected seconds >= 0")
        for name in ("score_threshold", "nms_iou_threshold", "mask_threshold"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ModelLoadError(f"parameter {name}={getattr(self, name)}: expected a number from 0 to 1")
        if self.input_scale == "mean_std":
            mean, std = self.mean_std
            if not mean or not std or 0.0 in std:
                raise ModelLoadError("input_scale=mean_std needs input_mean and input_std (non-zero), e.g. 127.5")
        if self.postprocess == "detection":
            _ = self.anchor_layout  # checked here so a bad layout stops the server at start
        if self.uncertain_store and self.confidence_threshold is None:
            raise ModelLoadError(
                "parameter uncertain_store needs confidence_threshold: it uploads the images it finds uncertain"
            )
        if self.escalate_url and self.confidence_threshold is None:
            raise ModelLoadError(
                "parameter escalate_url needs confidence_threshold: only answers it finds uncertain are escalated"
            )
        if self.labels and self.label_names:
            raise ModelLoadError("parameters labels and label_names: set one (a labels file, or the labels themselves)")
        needs = {"uncertain_spool_dir": "uncertain_store", "escalate_headers_file": "escalate_url"}
        for name, needed in needs.items():
            if getattr(self, name) and not getattr(self, needed):
                raise ModelLoadError(f"parameter {name} needs {needed}: set both, or neither")
        if not 0.0 < self.weak_box_fraction <= 1.0:
            raise ModelLoadError(
                f"parameter weak_box_fraction={self.weak_box_fraction}: expected a share above 0, at most 1"
            )
        threshold = self.confidence_threshold
        if self.uncertainty != "top1" and threshold is not None and not 0.0 <= threshold <= 1.0:
            raise ModelLoadError(
                f"parameter confidence_threshold={threshold}: expected a number from 0 to 1 for uncertainty={self.uncertainty}"
            )


SELDON_TYPES = {int: "INT", float: "FLOAT", bool: "BOOL", str: "STRING"}


def seldon_types() -> dict[str, str]:
    """Each parameter's Seldon type (INT, FLOAT, BOOL, STRING: what the operator's list and the chart carry), from
    its Settings field (`float | None` is a FLOAT)."""
    hints = typing.get_type_hints(Settings)
    return {
        f.name: next(SELDON_TYPES[t] for t in (*typing.get_args(hints[f.name]), hints[f.name]) if t in SELDON_TYPES)
        for f in fields(Settings)
    }


def _coerce(name: str, value: Any, annotation: str) -> Any:
    """Convert a parameter to the field's type (annotations are strings under `from __future__`)."""
    kind = annotation.split("|")[0].strip()
    try:
        if kind == "bool":
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError
            return text in ("true", "1", "yes")
        if kind == "int":
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(str(value).strip()) if isinstance(value, str) else int(value)
        if kind == "float":
            return float(value)
        return str(value).strip()
    except (TypeError, ValueError):
        raise ModelLoadError(f"parameter {name}={value!r}: expected {kind}") from None
