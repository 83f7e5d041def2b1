"""Metrics handed to Seldon in batches (edgeservers/metrics.py)."""

from __future__ import annotations


def test_info_gauges_go_with_the_first_hand_over_only():
    from edgeservers.metrics import MetricsBatch, RequestMetrics, info_gauge

    gauge = info_gauge("edgeservers_delegate_info", {"delegate": "libedgetpu.so.1", "applied": "true"})
    assert gauge == {
        "type": "GAUGE",
        "key": "edgeservers_delegate_info",
        "value": 1,
        "tags": {"delegate": "libedgetpu.so.1", "applied": "true"},
    }
    batch = MetricsBatch(0, [gauge])
    assert batch.due() == [gauge]
    request = RequestMetrics()
    with request.timed("edgeservers_inference_seconds"):
        pass
    batch.add(request)
    assert [m["type"] for m in batch.due()] == ["TIMER"]
