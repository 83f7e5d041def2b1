"""One version of the model's files: what a request needs from it besides the server's fixed parts (its pool of
inference slots, its labels' post-processing) and what the server reports of it. With model_poll_interval the
server swaps one version for another while it runs (core/updates.py); a request keeps the version it started
on, so the pool a request infers on and the labels it is answered with always belong together."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..metrics import MODEL_INFO, info_gauge
from ..runtimes.base import ModelRuntime
from .postprocess import Postprocessor


@dataclass(frozen=True)
class ModelVersion:
    """`provenance`: {model_version, model_source, model_fetched_at} when known (empty for a model copied by
    hand); `runtime`: the pool, once this process has loaded the version; `directory`: a copy of the files this
    process made for it (an update's download), removed with it."""

    model_path: Path
    provenance: Mapping[str, str]
    labels: Sequence[str] | None
    postprocessor: Postprocessor | None
    precision: str
    report: Mapping[str, str]  # the runtime's words on how it runs these files (metadata's `custom`)
    runtime_info: Sequence[dict] = ()  # the runtime's info gauges for these files
    runtime: ModelRuntime[Any] | None = field(default=None, compare=False)
    directory: Path | None = None

    @property
    def version(self) -> str:
        """Its sha256 prefix (or the listing's, for several files); "" when unknown."""
        return self.provenance.get("model_version", "")

    @property
    def source(self) -> str:
        """Where its files came from: download, cache, cache-offline, image or local; "" when unknown."""
        return self.provenance.get("model_source", "")

    def info_metrics(self, serving: bool = True) -> list[dict]:
        """edgeservers_model_info{version, source} (1 while it serves, 0 once replaced) and the runtime's gauges."""
        model = [info_gauge(MODEL_INFO, {"version": self.version, "source": self.source}, int(serving))]
        return (model if self.version else []) + (list(self.runtime_info) if serving else [])

    def infer(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        assert self.runtime is not None, "the version is not loaded in this process"
        return self.runtime.infer(inputs)
