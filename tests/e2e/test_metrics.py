"""What the metrics endpoint of real servers holds: durations in seconds, every series documented in
docs/metrics.md with its type and labels, and every series the Grafana dashboard queries (its structure is
tests/unit/test_dashboard.py's, the code's names against the doc tests/unit/test_metrics_doc.py's).

Three servers with the operator's labels make every kind of series: a bigger model (mobilenet_v2); a small
edge model escalating its uncertain answers to it, uploading them to S3 and running a delegate; and an edge
whose bigger model and bucket are gone, so escalations fail, the breaker opens and uploads are dropped
or evicted from the spool, and whose model update cannot load."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.support.harness import wait_for
from tests.support.paths import MOBILENET_V1, MOBILENET_V2
from tests.support.prometheus import (
    SELDON_LABELS,
    dashboard,
    documented,
    families,
    queries,
    series_used,
    total,
)
from tests.support.services import S3Server, closed_port
from tests.support.updating import put_model

pytestmark = pytest.mark.usefixtures("s3_server")

BIG = "mobilenet_v2_1.0_224_quant"
UNSURE = ("cat.bmp", "bird.bmp")  # mobilenet_v1_0.25's top scores 0.32, 0.43: below 0.5
PROMETHEUS_OWN = {"up"}  # what Prometheus adds to every scrape itself


def operator_labels(deployment: str, unit: str) -> dict[str, str]:
    """The environment the Seldon operator gives a model container, as far as the metrics' labels go."""
    return {
        "SELDON_DEPLOYMENT_ID": deployment,
        "PREDICTOR_ID": "default",
        "PREDICTOR_LABELS": '{"version":"default"}',
        "PREDICTIVE_UNIT_ID": unit,
        "PREDICTIVE_UNIT_IMAGE": "ghcr.io/edgeservers/edgeservers:0.1.0",
        "GRPC_WORKERS": "0",
    }


@pytest.fixture(scope="module")
def big(start_server):
    return start_server(
        "TFLiteServer", env=operator_labels("gateway", "classifier"), model_uri=str(MOBILENET_V2), metrics_interval=0.0
    )


@pytest.fixture(scope="module")
def edge(start_server, big, s3_server: S3Server, tiny_delegate):
    s3_server.put("retraining", {})
    return start_server(
        "TFLiteServer",
        env={**s3_server.env, **operator_labels("camera", "detector")},
        model_uri=str(MOBILENET_V1),
        confidence_threshold=0.5,
        escalate_url=f"{big.url}/v2/models/{BIG}/infer",
        uncertain_store="s3://retraining/",
        delegate=str(tiny_delegate.library),
        delegate_options="mode=reshape",
        metrics_interval=0.0,
    )


@pytest.fixture(scope="module")
def cut_off_model(tmp_path_factory) -> Path:
    """The cut-off edge's model directory, a copy of mobilenet_v1's, which it polls for updates."""
    models = tmp_path_factory.mktemp("cut-off") / "model"
    shutil.copytree(MOBILENET_V1, models)
    return models


@pytest.fixture(scope="module")
def cut_off(start_server, s3_server: S3Server, cut_off_model: Path, tmp_path_factory):
    """An edge whose bigger model is gone (a closed port: the breaker opens after one failure) and whose bucket
    does not exist (each upload refused, then dropped), spooling at most one image (the others evicted); it
    looks for model updates in its model directory."""
    return start_server(
        "TFLiteServer",
        env={**s3_server.env, **operator_labels("camera", "cut-off")},
        model_uri=str(cut_off_model),
        model_poll_interval=0.2,
        confidence_threshold=0.5,
        escalate_url=f"http://127.0.0.1:{closed_port()}/v2/models/{BIG}/infer",
        escalate_breaker_failures=1,
        uncertain_store="s3://no-such-bucket/",
        uncertain_spool_dir=str(tmp_path_factory.mktemp("spool")),
        uncertain_spool_max_files=1,
        metrics_interval=0.0,
    )


def test_durations_reach_prometheus_in_seconds(big):
    """Seldon divides a TIMER's milliseconds by 1000: the histogram's sum is the responses' own timings in
    seconds, and lies within the time the client waited (a check of the unit, not of the speed)."""
    before = big.prometheus()
    waited, timed_ms = 0.0, 0.0
    for _ in range(5):
        start = time.perf_counter()
        reply = big.image("parrot.jpg")
        waited += time.perf_counter() - start
        (ms,) = [m["value"] for m in reply["meta"]["metrics"] if m["key"] == "edgeservers_inference_seconds"]
        timed_ms += ms
    after = big.prometheus()
    count, seconds = (
        total(after, f"edgeservers_inference_seconds{s}") - total(before, f"edgeservers_inference_seconds{s}")
        for s in ("_count", "_sum")
    )
    assert count == 5
    assert seconds == pytest.approx(timed_ms / 1000, rel=1e-6, abs=1e-9)
    assert waited / 100 < seconds < waited, (seconds, waited)


@pytest.fixture(scope="module")
def scrapes(big, edge, cut_off, cut_off_model: Path) -> dict[str, str]:
    """Each server's scrape after predictions (certain and uncertain) and a feedback, once every kind of series
    has arrived (uploads, drops and evictions are counted in the background)."""
    for photo in ("parrot.jpg", *UNSURE):
        edge.image(photo)
        cut_off.image(photo)
    cut_off.image("cat.bmp")  # the breaker is open: skipped; a third uncertain image for the one-image spool
    (model_file,) = cut_off_model.glob("*.tflite")
    put_model(cut_off_model, b"not a model", model_file.name)  # an update the server refuses
    feedback: dict[str, Any] = {"reward": 1.0, "request": {"data": {"ndarray": [[1]]}}}
    reply = requests.post(f"{big.url}/api/v1.0/feedback", json=feedback, timeout=10)
    assert reply.status_code == 200, reply.text
    wait_for(lambda: total(edge.prometheus(), "edgeservers_uncertain_uploaded_total") == 2)
    wait_for(lambda: total(cut_off.prometheus(), "edgeservers_model_update_failures_total") == 1)
    wait_for(
        lambda: (
            total(cut_off.prometheus(), "edgeservers_uncertain_dropped_total") >= 1
            and total(cut_off.prometheus(), "edgeservers_uncertain_evicted_total") >= 1
        )
    )
    return {"big": big.prometheus(), "edge": edge.prometheus(), "cut_off": cut_off.prometheus()}


def test_every_series_is_documented_with_its_type_and_labels(scrapes):
    rows = documented()
    by_series = {series: row for row in rows.values() for series in row.series}
    exported = {}
    for server, text in scrapes.items():
        for family in families(text).values():
            for name, labels, _ in family.samples:
                assert name in by_series, f"{name} ({server}) is not in docs/metrics.md"
                row = by_series[name]
                assert family.type == row.type, (name, family.type, row.type)
                bucket = {"le"} if name.endswith("_bucket") else set()
                assert set(labels) == SELDON_LABELS | row.labels | bucket, (name, sorted(labels))
                exported[name] = labels
    labels = exported["edgeservers_inference_seconds_count"]
    assert labels["method"] == "predict" and labels["predictor_version"] == "default"
    assert exported["seldon_api_model_feedback_total"]["method"] == "feedback"
    assert exported["edgeservers_escalation_failures_total"]["reason"] == "unreachable"
    assert exported["edgeservers_delegate_info"]["applied"] == "true"


def test_every_series_the_dashboard_queries_is_exported(scrapes):
    samples = [s for text in scrapes.values() for f in families(text).values() for s in f.samples]
    used = set().union(*map(series_used, queries(dashboard())))
    assert used - {name for name, _, _ in samples} == PROMETHEUS_OWN
    # what the panels filter on: the operator's labels of the model that counted it
    assert {(labels["deployment_name"], labels["model_name"]) for _, labels, _ in samples} == {
        ("gateway", "classifier"),
        ("camera", "detector"),
        ("camera", "cut-off"),
    }
