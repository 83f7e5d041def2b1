"""Small requests that ask for much more work than they weigh (tests/support/amplify.py builds them): each is
refused before the work, and its cost is measured: the status, the peak PSS growth of the server's process
tree, and the wait of a normal prediction sent beside it. The chart's settings (one REST worker with one
thread), gRPC on for the gRPC cases; a real S3 (moto) behind image_store and uncertain_store
(tests/component/test_amplification.py has the cases that need no server process)."""

from __future__ import annotations

import json
import os
import signal
import time
from typing import Any

import pytest
import requests

from tests.support import amplify
from tests.support.hostile import CHART_ENV, normal_body
from tests.support.paths import MOBILENET_V2
from tests.support.services import BlackHole

GROWTH_MB = 100  # no request under max_request_bytes may cost more (docs/security.md)
WAIT_S = 5.0  # a normal prediction beside a refused request is not held: refusals take milliseconds
OUTPUT, INFER = amplify.OUTPUT, amplify.infer_path()


@pytest.fixture(scope="module")
def store(s3_server):
    return amplify.image_store(s3_server)


@pytest.fixture(scope="module")
def server(start_server, store):
    return start_server(
        "TFLiteServer",
        env={**CHART_ENV, "GRPC_WORKERS": "1", **store.env},
        model_uri=str(MOBILENET_V2),
        image_store=f"s3://{amplify.BUCKET}/cam/",
    )


def assert_cheap(row: dict[str, Any], status: Any) -> None:
    assert row["status"] == status, row
    assert row["pss_growth_mb"] < GROWTH_MB, row
    assert row["bystander_wait_s"] is not None and row["bystander_wait_s"] < WAIT_S, row


# --- requested outputs and the response ---------------------------------------------------------------


def test_an_output_requested_many_times_is_refused_before_the_work(server):
    rest = amplify.measured(
        server, "", lambda: amplify.post(server.http_port, INFER, amplify.repeated_outputs(10_000, 1001))
    )
    assert_cheap(rest, 400)
    grpc_row = amplify.measured(
        server, "", lambda: amplify.grpc_call(server, "ModelInfer", amplify.grpc_repeated_outputs(2_000, 1001))
    )
    assert_cheap(grpc_row, "INVALID_ARGUMENT")
    twice = requests.post(server.url + INFER, data=amplify.repeated_outputs(2, 5), timeout=30)
    assert twice.status_code == 400 and f"output {OUTPUT!r} is requested more than once" in twice.json()["error"]


def test_a_classification_beyond_the_outputs_classes_is_refused(server):
    answer = requests.post(server.url + INFER, data=amplify.repeated_outputs(1, 1002), timeout=30)
    assert answer.status_code == 400, answer.text
    assert "from 1 to its 1001 classes, got 1002" in answer.json()["error"]
    whole = requests.post(server.url + INFER, data=amplify.repeated_outputs(1, 1001), timeout=30)
    assert whole.status_code == 200 and len(whole.json()["outputs"][0]["data"]) == 1001


# --- bucket notifications and the image store -----------------------------------------------------------


def test_a_notification_naming_too_many_objects_is_refused_before_any_fetch(server, load_server, monkeypatch):
    assert_cheap(
        amplify.measured(
            server, "", lambda: amplify.post(server.http_port, "/api/v1.0/predictions", amplify.notification(2_000))
        ),
        413,
    )
    with BlackHole() as hole:  # an S3 endpoint that would hold every fetch: none may be tried
        monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{hole.port}")
        component = load_server("TFLiteServer", model_uri=str(MOBILENET_V2), image_store=f"s3://{amplify.BUCKET}/cam/")
        answer = component.rest(json.loads(amplify.notification(17)))
        assert answer.status_code == 413 and "max_event_records=16" in answer.json()["status"]["info"]
        assert hole.accepted == 0


# --- values counted before parsing -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "make", [amplify.header_bypass_numbers, amplify.header_bypass_inputs], ids=["numbers", "inputs"]
)
def test_the_binary_header_does_not_skip_the_value_count(server, make):
    body, headers = make((16 << 20) - 4096) if make is amplify.header_bypass_numbers else make(250_000)
    row = amplify.measured(server, "", lambda: amplify.post(server.http_port, INFER, body, headers))
    assert_cheap(row, 413)


@pytest.mark.parametrize("field", ["uint_contents", "bytes_contents", "fp32_contents"])
def test_typed_grpc_contents_are_counted_before_they_are_parsed(server, field):
    request = amplify.grpc_typed_contents(field, 16_000_000)
    row = amplify.measured(server, "", lambda: amplify.grpc_call(server, "ModelInfer", request))
    assert_cheap(row, "RESOURCE_EXHAUSTED")
    assert row["s"] < WAIT_S, row


# --- uncertain uploads ------------------------------------------------------------------------------------


def test_one_request_cannot_stop_the_uncertain_uploads(start_server, store):
    """A 100 KB request_id must not become an object key the store refuses (the one upload thread would retry it
    forever at the head of the queue): the key holds a safe id, and every upload arrives; the counts
    reach Prometheus without waiting for another request. (A queue of 64: the 41 predictions here arrive
    faster than they upload.)"""
    store.put("retraining", {})
    server = start_server(
        "TFLiteServer",
        env={**CHART_ENV, **store.env},
        model_uri=str(MOBILENET_V2),
        uncertain_store="s3://retraining/poison/",
        confidence_threshold=1.0,
        uncertain_queue_size=64,
    )
    body = json.loads(normal_body())
    poisoned = server.rest({**body, "meta": {"tags": {"request_id": "x" * 100_000}}})
    assert poisoned.status_code == 200
    for i in range(40):
        assert server.rest({**body, "meta": {"tags": {"request_id": f"frame-{i}"}}}).status_code == 200

    def images() -> list[str]:
        listed = store.client.list_objects_v2(Bucket="retraining", Prefix="poison/").get("Contents", [])
        return [o["Key"] for o in listed if o["Key"].endswith(".jpg")]

    deadline = time.monotonic() + 30
    while len(images()) < 41 and time.monotonic() < deadline:
        time.sleep(0.2)
    keys = images()
    assert len(keys) == 41, keys
    assert all(len(k) < 200 for k in keys) and sum(k.endswith("-frame-7.jpg") for k in keys) == 1

    def counted() -> float:
        lines = server.prometheus().splitlines()
        return sum(float(x.rsplit(" ", 1)[1]) for x in lines if x.startswith("edgeservers_uncertain_uploaded_total{"))

    while counted() < 41 and time.monotonic() < deadline + 5:  # the last count follows its sidecar's upload
        time.sleep(0.2)
    assert counted() == 41
    os.killpg(server.pid, signal.SIGTERM)
    server.proc.wait(30)
    assert max(len(line) for line in server.stderr_after_exit().splitlines()) < 2000  # no 100 KB log lines
