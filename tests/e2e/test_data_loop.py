"""The edge data loop against a real S3 API (moto in server mode): images classified by reference and
from bucket notifications (S3/Ceph/MinIO records, CloudEvents), and uncertain images sent home
(tests/component/test_data_loop.py: references refused before any request, in-process)."""

from __future__ import annotations

import base64
import json
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from google.protobuf import json_format
from seldon_core.proto import prediction_pb2

from tests.support.harness import wait_for
from tests.support.paths import MOBILENET_V2, image_bytes
from tests.support.payloads import s3_record

BUCKET = "camera-frames"
PHOTOS = {"parrot.jpg": "macaw", "cat.bmp": "Egyptian cat", "bird.bmp": "chickadee"}


@pytest.fixture(scope="module")
def s3(s3_server):
    """The shared S3 API with the camera's frames, frames elsewhere, and an empty retraining bucket."""
    for name in PHOTOS:
        s3_server.put(BUCKET, {f"cam 1/{name}": image_bytes(name), f"private/{name}": image_bytes(name)})
        s3_server.put("other-bucket", {f"cam 1/{name}": image_bytes(name)})
    s3_server.put(BUCKET, {"cam 1/huge.jpg": image_bytes("parrot.jpg") + b"\0" * 2_000_000})
    s3_server.put("retraining", {})
    return s3_server


@pytest.fixture(scope="module")
def server(start_server, s3):
    return start_server(
        "TFLiteServer",
        env=s3.env,
        model_uri=str(MOBILENET_V2),
        image_store=f"s3://{BUCKET}/cam 1/",
        max_request_bytes=2_000_000,
        max_event_records=100,  # a hundred records in one notification below (the default's 413: test_amplification.py)
    )


def record(key: str, event: str = "ObjectCreated:Put", bucket: str = BUCKET) -> dict:
    return s3_record(bucket, key, event)


def _labels(answers: list[dict]) -> list[tuple[str, str]]:
    return [(a["image_uri"], a["answer"][0]["label"]) for a in answers]


def test_image_uri_gets_the_same_answer_as_the_bytes(server):
    for name, label in PHOTOS.items():
        by_uri = server.rest_ok({"jsonData": {"image_uri": f"s3://{BUCKET}/cam 1/{name}"}})
        assert by_uri["jsonData"] == server.image(name)["jsonData"]
        assert by_uri["jsonData"][0]["label"] == label
        assert by_uri["meta"]["tags"]["image_uri"] == f"s3://{BUCKET}/cam 1/{name}"
    message = prediction_pb2.SeldonMessage()
    message.jsonData.struct_value.update({"image_uri": f"s3://{BUCKET}/cam 1/parrot.jpg"})
    reply = json_format.MessageToDict(server.grpc(message))
    assert reply["jsonData"][0]["label"] == "macaw" and reply["meta"]["tags"]["image_uri"].endswith("parrot.jpg")


def test_bucket_notification_answers_each_created_object_in_order(server):
    records = [
        record("cam 1/cat.bmp"),
        record("cam 1/parrot.jpg", "ObjectRemoved:Delete"),
        record("cam 1/parrot.jpg", "s3:ObjectCreated:Put"),
        record("cam 1/bird.bmp", "ObjectCreated:CompleteMultipartUpload"),
    ]
    answers = server.rest_ok({"Records": records})["jsonData"]
    assert _labels(answers) == [
        (f"s3://{BUCKET}/cam 1/cat.bmp", "Egyptian cat"),
        (f"s3://{BUCKET}/cam 1/parrot.jpg", "macaw"),
        (f"s3://{BUCKET}/cam 1/bird.bmp", "chickadee"),
    ]


def test_a_hundred_records_get_a_hundred_answers_in_order(server):
    names = [list(PHOTOS)[i % 3] for i in range(100)]
    answers = server.rest_ok({"Records": [record(f"cam 1/{n}") for n in names]})["jsonData"]
    assert _labels(answers) == [(f"s3://{BUCKET}/cam 1/{n}", PHOTOS[n]) for n in names]


def test_minio_webhook_and_cloudevents_binary_and_structured(server):
    minio = {
        "EventName": "s3:ObjectCreated:Put",
        "Key": f"{BUCKET}/cam 1/cat.bmp",
        "Records": [record("cam 1/cat.bmp", "s3:ObjectCreated:Put")],
    }
    assert _labels(server.rest_ok(minio)["jsonData"]) == [(f"s3://{BUCKET}/cam 1/cat.bmp", "Egyptian cat")]
    # Knative CephSource: one record per binary-mode CloudEvent, the attributes in ce-* headers.
    headers = {
        "ce-specversion": "1.0",
        "ce-type": "com.amazonaws.ObjectCreated:Put",
        "ce-id": "1",
        "ce-source": "ceph:rgw",
        "Content-Type": "application/json",
    }
    binary = server.rest(data=json.dumps(record("cam 1/parrot.jpg")), headers=headers)
    assert binary.status_code == 200, binary.text
    assert _labels(binary.json()["jsonData"]) == [(f"s3://{BUCKET}/cam 1/parrot.jpg", "macaw")]
    structured = {
        "specversion": "1.0",
        "type": "com.amazonaws.ObjectCreated:Put",
        "id": "2",
        "source": "ceph:rgw",
        "datacontenttype": "application/json",
        "data": {"Records": [record("cam 1/bird.bmp")]},
    }
    answer = server.rest(data=json.dumps(structured), headers={"Content-Type": "application/cloudevents+json"})
    assert answer.status_code == 200, answer.text
    assert _labels(answer.json()["jsonData"]) == [(f"s3://{BUCKET}/cam 1/bird.bmp", "chickadee")]
    # The same event with its data as binary (data_base64), as a structured CloudEvent carries non-JSON data.
    del structured["data"]
    structured["data_base64"] = base64.b64encode(json.dumps({"Records": [record("cam 1/cat.bmp")]}).encode()).decode()
    answer = server.rest(data=json.dumps(structured), headers={"Content-Type": "application/cloudevents+json"})
    assert answer.status_code == 200, answer.text
    assert _labels(answer.json()["jsonData"]) == [(f"s3://{BUCKET}/cam 1/cat.bmp", "Egyptian cat")]


def test_deletes_and_test_events_are_acknowledged_with_an_empty_answer(server):
    for body in (
        {"Records": [record("cam 1/cat.bmp", "ObjectRemoved:Delete")]},
        record("cam 1/cat.bmp", "ObjectRemoved:Delete"),
        {"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": BUCKET},
    ):
        assert server.rest_ok(body)["jsonData"] == []


def test_missing_and_oversized_objects_answer_4xx_naming_them(server):
    missing = server.rest({"jsonData": {"image_uri": f"s3://{BUCKET}/cam 1/gone.jpg"}})
    assert missing.status_code == 404 and f"s3://{BUCKET}/cam 1/gone.jpg" in missing.json()["status"]["info"]
    huge = server.rest({"Records": [record("cam 1/huge.jpg")]})
    assert huge.status_code == 413, huge.text
    assert "max_request_bytes" in huge.json()["status"]["info"] and "huge.jpg" in huge.json()["status"]["info"]
    assert server.image("parrot.jpg")["jsonData"][0]["label"] == "macaw"


# --- uncertain images home ------------------------------------------------------------------------


def _objects(s3, prefix: str) -> dict[str, bytes]:
    keys = [o["Key"] for o in s3.client.list_objects_v2(Bucket="retraining", Prefix=prefix).get("Contents", [])]
    return {k: s3.client.get_object(Bucket="retraining", Key=k)["Body"].read() for k in keys}


def _prometheus(server, name: str) -> float:
    text = requests.get(f"http://127.0.0.1:{server.metrics_port}/prometheus", timeout=10).text
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + "{"))


def _sending_home(start_server, s3, store: str, **params):
    """A classifier that finds every photo uncertain (threshold above any score) and sends it to `store`."""
    return start_server(
        "TFLiteServer",
        env=s3.env,
        model_uri=str(MOBILENET_V2),
        confidence_threshold=0.999,
        metrics_interval=0.0,
        uncertain_store=store,
        **params,
    )


def test_uncertain_images_and_their_sidecar_are_uploaded_byte_identical(start_server, s3):
    server = _sending_home(start_server, s3, "s3://retraining/uncertain/")
    reply = server.rest_ok(
        {
            "binData": base64.b64encode(image_bytes("cat.bmp")).decode(),
            "meta": {"tags": {"camera": "dock-3", "request_id": "frame-0042"}},
        }
    )
    assert reply["meta"]["tags"]["uncertain"] is True
    stored = wait_for(lambda: len(_objects(s3, "uncertain/")) == 2 and _objects(s3, "uncertain/"))
    (image_key,) = [k for k in stored if k.endswith(".bmp")]
    (sidecar_key,) = [k for k in stored if k.endswith(".json")]
    assert stored[image_key] == image_bytes("cat.bmp") and "frame-0042" in image_key
    sidecar = json.loads(stored[sidecar_key])
    assert sidecar["tags"] == {"camera": "dock-3", "request_id": "frame-0042"}
    assert sidecar["answer"][0]["label"] == "Egyptian cat" and sidecar["score"] < 0.999
    assert sidecar["model"] == "mobilenet_v2_1.0_224_quant" and sidecar["image"] == image_key
    # the uploader counts after its last PUT and hands the count over at once, with no request
    wait_for(lambda: _prometheus(server, "edgeservers_uncertain_uploaded_total") == 1, 30, "the upload counted")


def test_a_dead_store_never_slows_predictions_and_uploads_resume_when_it_is_back(start_server, s3):
    server = _sending_home(start_server, s3, "s3://retraining/outage/", uncertain_queue_size=2)
    with s3.outage():
        frames = [image_bytes(n) for n in ("cat.bmp", "bird.bmp") * 10]
        with ThreadPoolExecutor(2) as pool:  # every prediction answered while uploads cannot go anywhere
            replies = list(pool.map(lambda f: server.rest_ok(files={"binData": ("f", f)}), frames))
        assert all(r["meta"]["tags"]["uncertain"] for r in replies)

        def dropped() -> bool:
            server.image("bird.bmp")  # each response hands the counters gathered since the last one over
            return _prometheus(server, "edgeservers_uncertain_dropped_total") >= 10

        wait_for(dropped, 30)
    wait_for(lambda: len(_objects(s3, "outage/")) >= 2, 90)  # the queued images arrive once it is back
