"""The pipeline recipes of docs/pipelines.md: the eKuiper external service calls the real server the
way its definition says, and the Knative manifests wire the Ceph source to the camera-loop model."""

from __future__ import annotations

import base64
import json
import re

import yaml

from tests.support.paths import ROOT, image_bytes

PIPELINES = ROOT / "charts" / "examples" / "pipelines"
EKUIPER = PIPELINES / "ekuiper"


def _proto() -> str:
    return (EKUIPER / "schemas" / "edgeservers.proto").read_text()


def _fields(message: str) -> dict[str, str]:
    """JSON names of a proto3 message's fields (json_name where given, as eKuiper sends and reads them)."""
    found = re.search(r"message " + message + r" \{(.*?)\n\}", _proto(), re.S)
    assert found, f"no message {message} in the proto"
    body = found.group(1)
    fields = {}
    for kind, name, json_name in re.findall(
        r"^\s*(?:repeated )?(\w+) (\w+) = \d+(?: \[json_name = \"(\w+)\"\])?;", body, re.M
    ):
        fields[json_name or re.sub(r"_(\w)", lambda m: m.group(1).upper(), name)] = kind
    return fields


def test_ekuiper_classify_posts_bindata_to_the_predictions_path_and_reads_typed_labels(mobilenet_in_process):
    """In-process (Seldon's Flask app): the rule's path, headers and body against the server's answer."""
    service = json.loads((EKUIPER / "edgeservers.json").read_text())
    (interface,) = service["interfaces"].values()
    assert interface["protocol"] == "rest" and interface["schemaFile"] == "edgeservers.proto"
    assert (EKUIPER / "schemas" / interface["schemaFile"]).is_file()
    rule = re.search(
        r"rpc classify\((\w+)\) returns \((\w+)\) \{\s*option \(google.api.http\) = \{post: \"([^\"]+)\" body: \"\*\"\};",
        _proto(),
    )
    request_message, response_message, path = rule.groups()
    assert _fields(request_message) == {"binData": "bytes"}
    # What eKuiper sends for classify(self) over a binary stream: the bytes field as base64 JSON.
    frame = {"binData": base64.b64encode(image_bytes("parrot.jpg")).decode()}
    answer = mobilenet_in_process.client.post(path, data=json.dumps(frame), headers=interface["options"]["headers"])
    assert answer.status_code == 200, answer.get_data(as_text=True)
    body = answer.get_json()
    assert set(_fields(response_message)) <= set(body)
    label_fields = _fields("Label")
    top = body["jsonData"][0]
    assert set(label_fields) == set(top) and top["label"] == "macaw"
    rule_json = json.loads((EKUIPER / "rule.json").read_text())
    assert "classify(self)" in rule_json["sql"]


def test_ekuiper_defects_reads_the_segmentation_answer():
    fields = _fields("Segmentation")
    assert {"count", "regions", "mask_pixels"} <= set(fields)
    assert _fields("Defects") == {"jsonData": "Segmentation"}


def test_knative_trigger_sends_ceph_object_creations_to_the_camera_loop_model():
    docs = {d["kind"]: d for d in yaml.safe_load_all((PIPELINES / "knative-ceph.yaml").read_text()) if d}
    assert set(docs) == {"Broker", "CephSource", "Trigger"}
    assert docs["CephSource"]["spec"]["sink"]["ref"]["name"] == docs["Broker"]["metadata"]["name"]
    trigger = docs["Trigger"]["spec"]
    assert trigger["broker"] == docs["Broker"]["metadata"]["name"]
    assert trigger["filter"]["attributes"]["type"] == "com.amazonaws.ObjectCreated:Put"
    model = yaml.safe_load((ROOT / "charts" / "examples" / "camera-loop.yaml").read_text())
    service = f"{model['metadata']['name']}-{model['spec']['predictors'][0]['name']}"
    assert trigger["subscriber"]["uri"].startswith(
        f"http://{service}.default.svc.cluster.local:9000/api/v1.0/predictions"
    )
    params = {p["name"]: p["value"] for p in model["spec"]["predictors"][0]["graph"]["parameters"]}
    assert params["image_store"].startswith("s3://") and params["uncertain_store"].startswith("s3://")
