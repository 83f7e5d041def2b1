"""What a request asks of the model and what the model answers, before any protocol writes it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..data_loop.escalation import Escalation
from .postprocess import Answer

# Forms whose tensors are named by input (one entry per input); any other tensor form carries the one input.
NAMED = "jsonData"
IMAGE = "image"


@dataclass
class Payload:
    """What a request carries: tensors by input name (None = the single input), an encoded image, or the URIs
    of images in the object store; and the client's own tags. `form` is how the protocol carried it (v1:
    "ndarray", "tensor", "tftensor", "jsonData", "image", "image_uri", "s3_event"), for its answer."""

    form: str
    tensors: dict[str | None, np.ndarray] = field(default_factory=dict)
    image: bytes = b""
    image_field: str = "binData"  # what the request called the image, for messages
    image_uris: tuple[Any, ...] = ()  # image_uri: the one URI as sent; s3_event: each created object's
    tags: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Prediction:
    """One request's result: the selected raw outputs; the answer returned (post-processed, or a bigger model's
    when an uncertain answer was escalated); whether `confidence_threshold` found it uncertain (None when no
    threshold is set); with escalate_url, who answered (None for payloads that are not images); and the model
    version that answered, as Open Inference Protocol clients see it ("" when none)."""

    outputs: dict[str, np.ndarray]
    answer: Answer | None
    uncertain: bool | None
    escalation: Escalation | None = None
    model_version: str = ""

    def report(self) -> dict[str, Any]:
        """What the answer says of itself beyond the model: uncertain, answered_by, edge_answer, escalation_error."""
        report: dict[str, Any] = {} if self.uncertain is None else {"uncertain": self.uncertain}
        if self.escalation is not None:
            report.update(self.escalation.report())
        return report
