"""Per-request timings and the uncertain-prediction count, as Seldon custom metrics.

Seldon exposes what a response's meta.metrics holds on its Prometheus endpoint (TIMER values in
milliseconds become histograms, COUNTER values are added up), labelled with the worker.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator

PREPROCESS = "edgeservers_preprocess_ms"
INFERENCE = "edgeservers_inference_ms"
POSTPROCESS = "edgeservers_postprocess_ms"
UNCERTAIN = "edgeservers_uncertain_predictions_total"


@dataclass
class RequestMetrics:
    """What one request spent where, and whether its answer was uncertain."""

    timings_ms: dict[str, float] = field(default_factory=dict)
    uncertain: bool = False

    @contextmanager
    def timed(self, key: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.timings_ms[key] = self.timings_ms.get(key, 0.0) + (time.perf_counter() - start) * 1000.0

    def as_seldon(self) -> list[dict]:
        metrics = [{"type": "TIMER", "key": key, "value": round(ms, 3)} for key, ms in self.timings_ms.items()]
        if self.uncertain:
            metrics.append({"type": "COUNTER", "key": UNCERTAIN, "value": 1})
        return metrics
