"""Per-request timings and the uncertain-prediction count, as Seldon custom metrics.

Seldon exposes what a response's meta.metrics holds on its Prometheus endpoint, labelled with the worker:
a TIMER (its value in milliseconds, as Seldon defines it) becomes a histogram of seconds, so the keys name
the Prometheus series in Prometheus' base unit (`..._seconds`); COUNTER values are added up (`..._total`).
Every hand-over costs IPC round trips to the store: `MetricsBatch` hands them over in batches.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

PREPROCESS = "edgeservers_preprocess_seconds"
INFERENCE = "edgeservers_inference_seconds"
POSTPROCESS = "edgeservers_postprocess_seconds"
UNCERTAIN = "edgeservers_uncertain_predictions_total"
DELEGATE_INFO = "edgeservers_delegate_info"
MODEL_INFO = "edgeservers_model_info"
UPDATE_FAILURES = "edgeservers_model_update_failures_total"


def info_gauge(key: str, labels: Mapping[str, str], value: int = 1) -> dict:
    """A Seldon GAUGE whose labels carry the facts (Prometheus' info-metric convention): 1 while they hold, 0 for
    facts that no longer do (the version a worker served before an update)."""
    return {"type": "GAUGE", "key": key, "value": value, "tags": dict(labels)}


def counter(key: str) -> dict:
    """One more of the Seldon COUNTER `key`."""
    return {"type": "COUNTER", "key": key, "value": 1}


@dataclass
class RequestMetrics:
    """What one request spent where, whether its answer was uncertain, and what else it counted (escalations)."""

    timings_ms: dict[str, float] = field(default_factory=dict)
    uncertain: bool = False
    counters: list[tuple[str, dict[str, str]]] = field(default_factory=list)

    def count(self, key: str, **labels: str) -> None:
        self.counters.append((key, labels))

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
        for key, labels in self.counters:
            metrics.append({"type": "COUNTER", "key": key, "value": 1, **({"tags": dict(labels)} if labels else {})})
        return metrics


class MetricsBatch:
    """Request metrics of one worker, handed to Seldon at most once per `interval` seconds.

    Each response carries, in meta.metrics, the metrics gathered since the last hand-over when it is
    due (the first request's at once), else none; `interval` 0 hands over every request's. `info` (gauges
    that do not change, e.g. info_gauge) go with the first hand-over of each process that serves.
    """

    def __init__(self, interval: float, info: Sequence[dict] = ()):
        self._interval = interval
        self._lock = threading.Lock()
        self._pending: list[dict] = list(info)
        self._last = float("-inf")

    def add(self, request: RequestMetrics) -> None:
        with self._lock:
            self._pending.extend(request.as_seldon())

    def withdraw(self, key: str) -> None:
        """Drop the pending metrics of `key`: info gauges that no longer hold before they were handed over (a
        gauge of 0 cannot travel in a response instead: a gRPC response's metrics lose a value of 0, and Seldon
        fails reading them)."""
        with self._lock:
            self._pending = [m for m in self._pending if m["key"] != key]

    def due(self) -> list[dict]:
        """The metrics to hand over now: all gathered since the last hand-over, once `interval` has passed."""
        now = time.monotonic()
        with self._lock:
            if now - self._last < self._interval:
                return []
            self._last = now
            due, self._pending = self._pending, []
            return due
