"""The servers' parameters: what Seldon passes (PREDICTIVE_UNIT_PARAMETERS / --parameters), checked once at start.

Seldon has already converted each value to its declared type (INT, FLOAT, BOOL, STRING); values
given as STRING are accepted too, so a typo in a manifest's type gets a clear error here.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
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


@dataclass(frozen=True)
class Settings:
    """Every parameter the servers take, with its default. See the README's parameter table."""

    model_uri: str
    # Node-local model cache for a remote model_uri (storage-initializer/README.md); "": none
    model_cache_dir: str = field(default_factory=lambda: os.environ.get("STORAGE_CACHE_DIR", "").strip())
    # In-place updates (core/updates.py): seconds between looks at model_uri (0: never), and a known input every
    # new version must answer before it serves (an image, or tensors in .npy / .npz)
    model_poll_interval: float = 0.0
    model_check_input: str = ""
    # Open Inference Protocol (V2): the name (default: the model file's stem) and optional version clients use
    model_name: str = ""
    model_version: str = ""
    input_tensor_name: str = ""
    output_tensor_name: str = ""
    labels: str = ""
    top_k: int = 5
    postprocess: str = "auto"
    confidence_threshold: float | None = None
    num_threads: int = field(default_factory=lambda: os.cpu_count() or 1)
    pool_size: int = 1
    metrics_interval: float = 1.0
    # Limits, checked before any work is done on a request
    max_request_bytes: int = 16 << 20  # a 12 MP camera JPEG as base64 JSON, or an input tensor as JSON numbers
    max_image_pixels: int = 40_000_000  # width x height of an encoded image, read from its header
    max_response_bytes: int = (
        0  # an OIP response's tensors; 0: the larger of max_request_bytes and 2x every output as JSON
    )
    # The edge data loop: images by reference, uncertain images home
    image_store: str = ""
    uncertain_store: str = ""
    image_store_timeout: float = 10.0  # s for all of one request's image_store fetches (504 past it)
    max_event_records: int = 16  # objects one bucket notification may name (413 past it, before any fetch)
    uncertain_queue_size: int = 32
    # Uncertain images kept on disk until uncertain_store takes them (data_loop/spool.py); "": in memory only.
    uncertain_spool_dir: str = ""
    uncertain_spool_max_bytes: int = 256 << 20
    # 10,000 files: a day offline at one uncertain frame every 10 s (8,640); the byte cap binds first for camera
    # frames over 27 KB, this one for tiny images, and keeps the directory quick to list on an SD card.
    uncertain_spool_max_files: int = 10_000
    # What makes an answer uncertain, given confidence_threshold: top1, margin, entropy, weak_boxes (detection)
    uncertainty: str = "top1"
    weak_box_fraction: float = 0.5  # uncertainty=weak_boxes: uncertain when this share of boxes is below the threshold
    # Uncertain answers escalated to a bigger model (data_loop/escalation.py): its Open Inference Protocol URL
    escalate_url: str = ""
    escalate_timeout: float = 2.0  # s for one escalation, all of it; past it the edge answers
    escalate_headers_file: str = ""  # "Name: value" lines sent with every escalation (credentials); never logged
    escalate_breaker_failures: int = 3  # consecutive failed escalations that open the circuit breaker
    escalate_breaker_cooldown: float = 30.0  # s the open breaker tries no escalation; then one trial call
    # REST serving (edgeservers/seldon/rest_worker.py): connections, timeouts, shutdown, exposure
    max_connections: int = 1000  # open REST connections per worker; more are answered 503 and closed
    header_timeout: float = 10.0  # s for a request line and all headers (and a keep-alive connection's idle time)
    body_timeout: float = 60.0  # s for a whole request body (16 MiB at 2.2 Mbit/s)
    graceful_timeout: float = (
        20.0  # s to finish the requests in flight after SIGTERM; keep below the pod's grace period
    )
    bind_address: str = "0.0.0.0"  # REST, metrics and gRPC listen here (127.0.0.1: this host only)
    cors_origins: str = ""  # comma-separated origins allowed by CORS ("*": any); empty: no CORS headers
    grpc_reflection: bool = False  # gRPC server reflection (lists the services to any client)
    # Image payloads
    input_scale: str = "auto"
    input_mean: str = "127.5"
    input_std: str = "127.5"
    channel_order: str = "RGB"
    input_layout: str = "auto"
    reduced_decode: bool = False  # JPEGs at least twice the input decoded at 1/2-1/8 scale: faster, answers may differ
    # postprocess=detection
    score_threshold: float = 0.5
    nms_iou_threshold: float = 0.4
    max_detections: int = 100
    anchor_feature_maps: str = FACE_MASK_FEATURE_MAPS
    anchor_sizes: str = FACE_MASK_ANCHOR_SIZES
    anchor_ratios: str = FACE_MASK_ANCHOR_RATIOS
    box_variances: str = FACE_MASK_BOX_VARIANCES
    # postprocess=segmentation
    segmentation_class: str = ""
    mask_threshold: float = 0.5
    min_region_area: int = 1
    return_mask: bool = False
    output_layout: str = "auto"
    # Both runtimes (values per runtime: ModelRuntime.precisions)
    inference_precision: str = "f32"
    # TFLite only: an external delegate (accelerator) library, its options, and what to do when it cannot run
    delegate: str = ""
    delegate_options: str = ""  # a JSON object or key=value;key=value, passed to the delegate as strings
    delegate_fallback: str = "fail"
    # OpenVINO only
    device: str = "CPU"
    performance_hint: str = "LATENCY"

    @property
    def input_names(self) -> tuple[str, ...]:
        return _names(self.input_tensor_name)

    @property
    def output_names(self) -> tuple[str, ...]:
        return _names(self.output_tensor_name)

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
        if self.model_poll_interval and is_remote(self.model_uri) and not self.model_cache_dir:
            raise ModelLoadError(
                f"parameter model_poll_interval={self.model_poll_interval:g} with a remote model_uri needs the "
                "node's model cache, through which updates are checked and fetched: set model_cache_dir (or the "
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
