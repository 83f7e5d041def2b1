"""KServe: charts/kserve/ (ClusterServingRuntimes and the face-mask InferenceService) against KServe's CRD
schemas, the pod KServe would build from them against Kubernetes' schemas, and that pod run locally.

- Schemas: the openAPIV3Schema of KServe's CRDs in tests/kubernetes/schemas/kserve/ (copied unchanged, see its
  README), strict about unknown fields like the SeldonDeployment ones (tests/support/k8s_validation.py).
- The pod: KServe's predictor reconciler merges the runtime's `kserve-container` with the
  InferenceService's `model` container (strategic merge: env by name, volumeMounts by mountPath; args
  concatenated), replaces `{{.Name}}` with the InferenceService's name, and merges the runtime's pod
  fields (volumes, affinity, tolerations, nodeSelector) with the predictor's. `kserve_pod` does the same.
- The run: the init container (`python -m edgeservers.storage <uri> /mnt/models`, as the image's
  ENTRYPOINT), then the model container as the image runs it (docker/entrypoint.sh) with the merged
  environment: REST 8080, gRPC 8081 (free ports instead when another process holds them on this shared
  machine), the model volume at a temporary directory instead of /mnt/models, and the model URL pointed at
  a local copy of the same file. The real Triton client then talks OIP to it, REST and gRPC.
"""

from __future__ import annotations

import copy
import json
import os
import socket
import subprocess
import time
from contextlib import closing
from pathlib import Path

import pytest
import requests
import yaml

from tests.support import k8s_validation as kv
from tests.support.harness import LOOPBACK_SHIM, free_port, stop_process_group
from tests.support.paths import IMAGES, ROOT
from tests.support.pods import PYTHON, Volumes
from tests.support.triton import TritonClient, call, ok, output

KSERVE = ROOT / "charts" / "kserve"
RUNTIMES = {
    "edgeservers-tflite": KSERVE / "clusterservingruntime-tflite.yaml",
    "edgeservers-openvino": KSERVE / "clusterservingruntime-openvino.yaml",
}
FACE_MASK = KSERVE / "face-mask-raspberry.yaml"
FACE_MASK_IMAGE = KSERVE / "face-mask-model-image.yaml"  # the model as an OCI image volume
HTTP_PORT, GRPC_PORT = 8080, 8081
MODEL_DIR = "/mnt/models"


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def _merge_by(base: list[dict], overlay: list[dict], key: str) -> list[dict]:
    merged = {item[key]: item for item in base}
    for item in overlay:
        merged[item[key]] = {**merged.get(item[key], {}), **item}
    return list(merged.values())


def kserve_pod(isvc: dict, runtime: dict) -> dict:
    """The predictor pod KServe (0.15) makes of an InferenceService and the ServingRuntime it names."""
    predictor = copy.deepcopy(isvc["spec"]["predictor"])
    model = predictor.pop("model")
    spec = copy.deepcopy(runtime["spec"])
    (container,) = [c for c in spec["containers"] if c["name"] == "kserve-container"]
    for field in (
        "image",
        "imagePullPolicy",
        "resources",
        "securityContext",
        "readinessProbe",
        "livenessProbe",
        "command",
    ):
        if field in model:
            container[field] = model[field]
    container["env"] = _merge_by(container.get("env") or [], model.get("env") or [], "name")
    container["volumeMounts"] = _merge_by(
        container.get("volumeMounts") or [], model.get("volumeMounts") or [], "mountPath"
    )
    container["args"] = (container.get("args") or []) + (model.get("args") or [])
    if not container["args"]:
        del container["args"]
    # ReplacePlaceholders: the container as JSON, {{.Name}} (and {{.Namespace}}) filled in
    text = json.dumps(container).replace("{{.Name}}", isvc["metadata"]["name"]).replace("{{.Namespace}}", "default")
    container = json.loads(text)
    pod_spec = {
        "initContainers": predictor.get("initContainers") or [],
        "containers": [container],
        "volumes": _merge_by(spec.get("volumes") or [], predictor.get("volumes") or [], "name"),
    }
    for field in ("nodeSelector", "affinity", "tolerations", "imagePullSecrets"):
        value = predictor.get(field, spec.get(field))
        if value:
            pod_spec[field] = value
    if not pod_spec["initContainers"]:
        del pod_spec["initContainers"]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": f"{isvc['metadata']['name']}-predictor"},
        "spec": pod_spec,
    }


# --- schema and KServe-convention checks ---------------------------------------------------------------------


@pytest.mark.parametrize("path", [*RUNTIMES.values(), FACE_MASK, FACE_MASK_IMAGE], ids=lambda p: p.name)
def test_manifests_match_kserves_crd_schemas(path):
    assert kv.kserve_errors(load(path)) == []


def test_the_schema_check_catches_mistakes():
    runtime = load(RUNTIMES["edgeservers-tflite"])
    runtime["spec"]["containers"][0]["port"] = 8080  # misspelt field
    runtime["spec"]["protocolVersions"] = "v2"  # not a list
    errors = kv.kserve_errors(runtime)
    assert any("'port' was unexpected" in e for e in errors) and any("protocolVersions" in e for e in errors)
    isvc = load(FACE_MASK)
    isvc["spec"]["predictor"]["model"]["modelFormat"] = "tflite"
    assert any("modelFormat" in e for e in kv.kserve_errors(isvc))


@pytest.mark.parametrize("name", sorted(RUNTIMES))
def test_runtimes_follow_kserves_conventions(name):
    runtime = load(RUNTIMES[name])
    assert runtime["metadata"]["name"] == name
    spec = runtime["spec"]
    assert spec["protocolVersions"] == ["v2", "grpc-v2"]
    formats = {f["name"] for f in spec["supportedModelFormats"]}
    assert formats == ({"tflite"} if name.endswith("tflite") else {"openvino", "onnx", "tflite"})
    (container,) = spec["containers"]
    assert container["name"] == "kserve-container"
    ports = {p["containerPort"]: p.get("name") for p in container["ports"]}
    assert ports == {HTTP_PORT: "http1", GRPC_PORT: "h2c"}
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["PREDICTIVE_UNIT_HTTP_SERVICE_PORT"] == str(HTTP_PORT) and env[
        "PREDICTIVE_UNIT_GRPC_SERVICE_PORT"
    ] == str(GRPC_PORT)
    assert env["MODEL_NAME"] == ("TFLiteServer" if name.endswith("tflite") else "OpenVINOServer")
    assert int(env["GRPC_WORKERS"]) >= 1
    parameters = {p["name"]: p["value"] for p in json.loads(env["PREDICTIVE_UNIT_PARAMETERS"])}
    assert parameters == {"model_uri": MODEL_DIR, "model_name": "{{.Name}}"}
    (term,) = spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    (arch,) = term["matchExpressions"]
    assert arch["key"] == "kubernetes.io/arch" and "arm64" in arch["values"]
    assert ("arm" in arch["values"]) == name.endswith("tflite")  # OpenVINO has no 32-bit ARM build
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"


def test_face_mask_inference_service_names_the_runtime_and_an_arm_node():
    isvc = load(FACE_MASK)
    predictor = isvc["spec"]["predictor"]
    model = predictor["model"]
    runtime = load(RUNTIMES[model["runtime"]])
    supported = {f["name"] for f in runtime["spec"]["supportedModelFormats"]}
    assert model["modelFormat"]["name"] in supported
    assert model["protocolVersion"] in runtime["spec"]["protocolVersions"]
    assert predictor["nodeSelector"]["kubernetes.io/arch"] in ("arm64", "arm")
    assert isvc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "RawDeployment"
    assert "storageUri" not in model  # KServe's initializer would be injected; ours runs as an init container
    owner, init = predictor["initContainers"]
    for c in (owner, init):
        assert c["image"].rsplit(":", 1)[0].endswith("/edgeservers-storage-initializer")
    assert owner["args"] == ["--cache-dir", "/var/cache/edgeservers", "--prepare-cache", "1000:1000"]
    assert owner["securityContext"]["capabilities"] == {"drop": ["ALL"], "add": ["CHOWN"]}
    assert init["args"][1:] == [MODEL_DIR, "--cache-dir", "/var/cache/edgeservers"]
    cache = next(v for v in predictor["volumes"] if v["name"] == "model-cache")
    assert cache["hostPath"] == {"path": "/var/lib/edgeservers/models", "type": "DirectoryOrCreate"}


def test_model_image_inference_service_mounts_an_image_volume_without_an_init_container():
    """The model as an OCI image: a read-only image volume at /mnt/models, no init container; the pod
    KServe builds passes Kubernetes 1.35's pod schema (and 1.28's refuses it: image volumes are newer)."""
    isvc = load(FACE_MASK_IMAGE)
    assert kv.kserve_errors(isvc) == []
    pod = kserve_pod(isvc, load(RUNTIMES["edgeservers-tflite"]))
    spec = pod["spec"]
    assert "initContainers" not in spec
    (volume,) = [v for v in spec["volumes"] if v["name"] == "model"]
    assert volume["image"]["reference"] and volume["image"]["pullPolicy"] == "IfNotPresent"
    (container,) = spec["containers"]
    assert {"name": "model", "mountPath": MODEL_DIR, "readOnly": True} in container["volumeMounts"]
    assert kv.pod_errors(pod, versions=("1.35",)) == []
    assert any("'image' was unexpected" in e for e in kv.pod_errors(pod, versions=(kv.K8S_VERSION,)))


@pytest.mark.parametrize("runtime_name", sorted(RUNTIMES))
def test_the_pod_kserve_builds_is_a_valid_pod(runtime_name):
    isvc = load(FACE_MASK)
    isvc["spec"]["predictor"]["model"]["runtime"] = runtime_name
    pod = kserve_pod(isvc, load(RUNTIMES[runtime_name]))
    assert kv.pod_errors(pod) == []
    (container,) = pod["spec"]["containers"]
    parameters = {
        p["name"]: p["value"]
        for p in json.loads({e["name"]: e["value"] for e in container["env"]}["PREDICTIVE_UNIT_PARAMETERS"])
    }
    assert parameters["model_name"] == "face-mask" and parameters["model_uri"] == MODEL_DIR
    assert {m["mountPath"] for m in container["volumeMounts"]} == {MODEL_DIR, "/tmp"}


# --- the pod, run locally ----------------------------------------------------------------------------------------


def _port_free(number: int) -> bool:
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        try:
            s.bind(("0.0.0.0", number))
            return True
        except OSError:
            return False


@pytest.fixture
def kserve_run(tmp_path, model_site):
    isvc = load(FACE_MASK)
    pod = kserve_pod(isvc, load(RUNTIMES["edgeservers-tflite"]))
    spec = pod["spec"]
    volumes = Volumes(spec, tmp_path / "volumes", tmp_path / "node")
    init = spec["initContainers"][-1]  # the download; the cache owner step before it is the chart's (test_contract)
    url = init["args"][0]
    args = [
        model_site.url(url.rsplit("/", 1)[-1]),
        *(volumes.host_path(init, a) if a.startswith("/") else a for a in init["args"][1:]),
    ]
    tmp = volumes.host_path(init, "/tmp")
    result = subprocess.run(
        [str(PYTHON), "-m", "edgeservers.storage", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": os.environ["PATH"], "HOME": tmp, "TMPDIR": tmp, "PYTHONPATH": str(ROOT)},
    )
    assert result.returncode == 0, result.stderr

    (container,) = spec["containers"]
    env = {e["name"]: e["value"] for e in container["env"]}
    http_port, grpc_port = HTTP_PORT, GRPC_PORT
    if not (_port_free(HTTP_PORT) and _port_free(GRPC_PORT)):  # a shared machine: same variables, other ports
        http_port, grpc_port = free_port(), free_port()
    env["PREDICTIVE_UNIT_HTTP_SERVICE_PORT"], env["PREDICTIVE_UNIT_GRPC_SERVICE_PORT"] = str(http_port), str(grpc_port)
    env["PREDICTIVE_UNIT_METRICS_SERVICE_PORT"] = str(free_port())
    parameters = json.loads(env["PREDICTIVE_UNIT_PARAMETERS"])
    for p in parameters:
        if p["name"] == "model_uri":
            p["value"] = volumes.host_path(container, p["value"])
    env["PREDICTIVE_UNIT_PARAMETERS"] = json.dumps(parameters)
    tmp = volumes.host_path(container, "/tmp")
    process_env = {
        "PATH": f"{PYTHON.parent}{os.pathsep}{os.environ['PATH']}",
        "LANG": "C.UTF-8",
        "HOME": tmp,
        "TMPDIR": tmp,
        "PYTHONPATH": os.pathsep.join([str(LOOPBACK_SHIM), str(ROOT)]),
        **env,
    }
    # The image's ENTRYPOINT (tini aside) with the container's args, from its WORKDIR (here: the checkout).
    proc = subprocess.Popen(
        ["sh", str(ROOT / "docker" / "entrypoint.sh"), *(container.get("args") or [])],
        cwd=ROOT,
        env=process_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    server = type(
        "Run",
        (),
        {
            "http_port": http_port,
            "grpc_port": grpc_port,
            "url": f"http://127.0.0.1:{http_port}",
            "model_dir": Path(volumes.host_path(container, MODEL_DIR)),
        },
    )()
    try:
        deadline = time.monotonic() + 180
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"server exited with {proc.returncode}:\n{proc.stderr.read().decode()[-4000:]}")
            try:
                if requests.get(server.url + "/v2/health/ready", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            assert time.monotonic() < deadline, "no /v2/health/ready within 180 s"
            time.sleep(0.3)
        yield server
    finally:
        stop_process_group(proc, timeout=30)
        proc.stderr.close()


def test_the_kserve_pod_answers_oip_with_the_triton_client(kserve_run, tmp_path):
    assert sorted(f.name for f in kserve_run.model_dir.iterdir()) == [
        ".edgeservers-model.json",
        "face_mask_detection.tflite",
    ]
    triton = TritonClient(tmp_path)
    photo = [{"name": "data_1", "datatype": "BYTES", "files": [str(IMAGES / "face_mask_demo.jpg")]}]
    results = triton.run(
        [
            call(kserve_run, "http", "live"),
            call(kserve_run, "grpc", "ready"),
            call(kserve_run, "http", "model_ready", "face-mask"),
            call(kserve_run, "grpc", "metadata", "face-mask"),
            call(kserve_run, "http", "infer", "face-mask", inputs=photo, outputs=[{"name": "answer"}]),
            call(kserve_run, "grpc", "infer", "face-mask", inputs=photo, outputs=[{"name": "answer"}]),
        ]
    )
    live, ready, model_ready, meta = (ok(r[0]) for r in results[:4])
    assert live is True and ready is True and model_ready is True
    assert meta["name"] == "face-mask" and meta["platform"] == "tflite"
    for result in results[4:]:
        detections = json.loads(output(ok(result[0]), "answer")[0])
        assert [d["label"] for d in detections] == ["Mask"]  # label_names: a bare .tflite has no labels.txt
    # and Seldon's v1 protocol on the same port
    with open(IMAGES / "face_mask_demo.jpg", "rb") as f:
        reply = requests.post(kserve_run.url + "/api/v1.0/predictions", files={"binData": f}, timeout=60)
    assert reply.status_code == 200 and [d["label"] for d in reply.json()["jsonData"]] == ["Mask"]
