"""Contract: the chart, the storage initializer and the server agree.

The rendered SeldonDeployment's pod is run here the way the Seldon v1 operator and the kubelet would
run it, with real processes and no cluster:

1. every emptyDir volume becomes a temporary directory, every hostPath a directory under a temporary
   "node" root (kept across pod runs, as a node keeps it), and each container's mounts map its paths there;
2. the init containers' args run as their image's ENTRYPOINT does (`python -m edgeservers.storage`):
   the model cache's owner step, then the download from a local HTTP or S3 server into the model volume
   through the cache;
3. the model container's environment is derived exactly as the operator derives it (see `operator_env`);
4. the server starts with that environment (`seldon-core-microservice <MODEL_NAME> --service-type MODEL`,
   as the image's entrypoint runs it) and answers its probes and a REST prediction.

Only three things differ from the pod, all for running on a shared machine: the ports (free loopback
ports instead of 9000/9500/6000, same variables), the paths volumes hold (/mnt/models, the uncertain
spool -> the volume's temporary directory, in the parameters and the init containers' args), and a
sitecustomize shim that makes the wrapper's `0.0.0.0` listeners bind 127.0.0.1 (checked in /proc/net/tcp).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests
import yaml

from tests.support import k8s_validation as kv
from tests.support.harness import listening_hosts
from tests.support.paths import MOBILENET_V2, ROOT, image_bytes
from tests.support.pods import MANIFEST, PodRun, model_initializer, operator_env
from tests.support.services import S3Server, tar_dir
from tests.support.updating import GOLDFISH, MACAW, A, eventually, model_tar, swapped_classes, version_of_tar

# --- fixtures ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module", autouse=True)
def tools() -> None:
    try:
        kv.tool("helm")
    except kv.ToolMissing as e:
        pytest.fail(str(e), pytrace=False)


@pytest.fixture
def pod_run(tmp_path: Path) -> Iterator[Callable[[dict], PodRun]]:
    """Run a rendered pod; every run of a test is on the same node (its hostPath directories are shared),
    each with fresh emptyDirs (a new pod)."""
    runs: list[PodRun] = []

    def run(sdep: dict) -> PodRun:
        runs.append(PodRun(sdep, tmp_path / f"pod-{len(runs)}", tmp_path / "node"))
        return runs[-1]

    yield run
    for r in runs:
        r.stop()


# --- the tests -------------------------------------------------------------------------------------------


def test_operator_env_derivation_matches_the_operator():
    """The derivation on a known pod: what the operator's code above gives for the chart's defaults."""
    sdep = kv.render_one(set_values={"modelUri": "s3://b/m.tar.gz", "parameters": {"top_k": 3}}, release="demo")
    (p,) = sdep["spec"]["predictors"]
    (container,) = p["componentSpecs"][0]["spec"]["containers"]
    env = operator_env(sdep, p, container)
    assert env["PREDICTIVE_UNIT_PARAMETERS"] == (
        '[{"name":"top_k","value":"3","type":"INT"},{"name":"model_uri","value":"/mnt/models","type":"STRING"}]'
    )
    assert env["PREDICTIVE_UNIT_HTTP_SERVICE_PORT"] == env["PREDICTIVE_UNIT_SERVICE_PORT"] == "9000"
    assert env["PREDICTIVE_UNIT_GRPC_SERVICE_PORT"] == "9500"
    assert env["PREDICTIVE_UNIT_METRICS_SERVICE_PORT"] == "6000"
    assert env["PREDICTIVE_UNIT_METRICS_ENDPOINT"] == "/prometheus"
    kserve = yaml.safe_load((ROOT / "charts" / "kserve" / "clusterservingruntime-tflite.yaml").read_text())
    assert env["PREDICTIVE_UNIT_IMAGE"] == kserve["spec"]["containers"][0]["image"]  # the image KServe runs too
    assert env["PREDICTIVE_UNIT_ID"] == "model" and env["PREDICTOR_ID"] == "default"
    assert env["SELDON_DEPLOYMENT_ID"] == "demo" and env["PREDICTOR_LABELS"] == '{"version":"default"}'
    assert env["MODEL_NAME"] == "TFLiteServer" and env["GRPC_WORKERS"] == "0"


def test_chart_initializer_and_server_agree_on_a_classifier(model_site, pod_run):
    """An archive (model + labels.txt) over HTTP, unpacked by the init container into the model volume;
    the server finds it at model_uri=/mnt/models and classifies the parrot."""
    sdep = kv.render_one(
        set_values={
            "modelUri": model_site.url("mobilenet_v2_quant.tar.gz"),
            "parameters": {"postprocess": "classification", "top_k": 3},
        }
    )
    assert kv.manifest_errors(sdep) == []
    run = pod_run(sdep)
    run.run_init_containers()
    model_dir = Path(run.volumes.dirs["model-provision-location"])
    assert sorted(f.name for f in model_dir.iterdir()) == [MANIFEST, "labels.txt", "mobilenet_v2_1.0_224_quant.tflite"]

    env = run.start_server()
    for port_var in ("PREDICTIVE_UNIT_HTTP_SERVICE_PORT", "PREDICTIVE_UNIT_METRICS_SERVICE_PORT"):
        assert listening_hosts(int(env[port_var])) == {"127.0.0.1"}

    (container,) = run.spec["containers"]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        path = container[probe]["httpGet"]["path"]
        assert requests.get(run.url + path, timeout=60).status_code == 200, probe

    answer = run.predict("parrot.jpg")
    assert len(answer) == 3
    assert answer[0]["label"] == "macaw"
    assert answer[0]["score"] > 0.5

    metrics = requests.get(run.metrics_url + env["PREDICTIVE_UNIT_METRICS_ENDPOINT"], timeout=30)
    assert metrics.status_code == 200


# --- every example, as shipped ----------------------------------------------------------------------------

EXAMPLES = {values.name.removesuffix(".values.yaml"): values for values, _ in kv.example_pairs()}

# What each example answers for a photo from images/: (photo, top label, number of answers). A bare .tflite
# has no labels.txt beside it, so its labels are the class indexes (ImageNet: 89 = macaw) unless label_names names them.
EXAMPLE_ANSWERS = {
    "armnn-cpuacc": ("parrot.jpg", "macaw", 3),  # no Arm NN library here: delegate_fallback=cpu, as the example says
    "camera-loop": ("parrot.jpg", "macaw", 3),
    "face-mask-raspberry": ("face_mask_demo.jpg", "Mask", 1),  # label_names: its bare .tflite has no labels
    "image-classifier": ("parrot.jpg", "macaw", 3),
    "openvino-classifier": ("parrot.jpg", "89", 5),
    # The small model is unsure of the cat (0.32 < 0.6): its escalate_url names a cluster Service that does not
    # resolve here, so its own answer comes back (tagged answered_by: edge; tests/e2e/test_escalation.py escalates).
    "two-tier-edge": ("cat.bmp", "tiger cat", 3),
    "two-tier-gateway": ("parrot.jpg", "macaw", 3),
}


def bundled_model(uri: str) -> tuple[str, bytes, list[str]]:
    """An example's modelUri as the local servers hold it: (object name, its bytes, the files the init container
    writes). https://.../<file>: the bundled file of that name; s3://bucket/<dir>.tar.gz: models/<dir> as an archive."""
    name = uri.rsplit("/", 1)[-1]
    if uri.startswith("s3://"):
        directory = ROOT / "models" / name.removesuffix(".tar.gz")
        return name, tar_dir(directory), sorted(f.name for f in directory.iterdir())
    (copy,) = ROOT.glob(f"models/*/{name}")  # an example that downloads anything else needs its model bundled
    return name, copy.read_bytes(), [name]


def docs_secret(s3_endpoint: str) -> tuple[str, dict[str, str]]:
    """The Secret docs/kubernetes.md's `kubectl create secret` makes, its S3 endpoint pointed at the local server."""
    (create,) = kv.find_command("kubectl", "create", "secret", "generic")
    secret = yaml.safe_load(kv.run_tool("kubectl", *create[1:], "--dry-run=client", "-o", "yaml").stdout)
    data = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    return secret["metadata"]["name"], {**data, "AWS_ENDPOINT_URL": s3_endpoint}


# Examples that cannot start without their accelerator (delegate_fallback=fail): rendered and validated only
# (tests/test_charts.py), never run here.
NEEDS_HARDWARE = {
    "coral-usb": "an Edge TPU with libedgetpu (its model is compiled for the TPU alone)",
    "imx8mp-npu": "an i.MX 8M Plus NPU and a user image with the VX delegate",
}


def test_every_example_is_run_or_said_to_need_hardware():
    for example in EXAMPLES:
        assert (example in EXAMPLE_ANSWERS) != (example in NEEDS_HARDWARE), (
            f"say what charts/examples/{example}.values.yaml answers in EXAMPLE_ANSWERS, or why it cannot run here "
            "in NEEDS_HARDWARE"
        )


@pytest.mark.parametrize("example", sorted(set(EXAMPLES) - set(NEEDS_HARDWARE)))
def test_every_example_runs_as_shipped(example, web, s3_server, pod_run):
    """Each example's own values, rendered and run as the operator and the kubelet would: its model fetched by the
    init container from a local stand-in for its modelUri (only an https:// URL is pointed at the local web server;
    s3:// examples keep theirs, the docs' Secret naming the local S3 server), the server started with exactly the
    rendered parameter list, and a prediction. An example that reads images by reference (image_store) answers for
    one fetched from its first store too."""
    assert example in EXAMPLE_ANSWERS, f"say what charts/examples/{example}.values.yaml answers in EXAMPLE_ANSWERS"
    photo, top, count = EXAMPLE_ANSWERS[example]
    values = yaml.safe_load(EXAMPLES[example].read_text())
    name, model, files = bundled_model(values["modelUri"])
    set_values, secrets = {}, {}
    if values["modelUri"].startswith("s3://"):
        s3_server.put(values["modelUri"].split("/")[2], {name: model})
    else:
        assert values["modelUri"].startswith("https://"), values["modelUri"]
        web.files[name] = model
        set_values["modelUri"] = web.url(name)
    if values.get("envSecretRefName"):
        secret_name, data = docs_secret(s3_server.endpoint)
        assert values["envSecretRefName"] == secret_name, "the docs create the Secret the example names"
        secrets[secret_name] = data

    sdep = kv.render_one([EXAMPLES[example]], set_values=set_values)
    assert kv.manifest_errors(sdep) == []
    run = pod_run(sdep)
    init = model_initializer(sdep)
    assert init.get("envFrom") == ([{"secretRef": {"name": secret}} for secret in secrets] or None)
    run.run_init_containers(secrets)
    assert sorted(f.name for f in Path(run.volumes.dirs["model-provision-location"]).iterdir()) == sorted(
        [MANIFEST, *files]
    )

    env = run.start_server(secrets)
    rendered = [
        {k: p[k] for k in ("name", "value", "type")} for p in sdep["spec"]["predictors"][0]["graph"]["parameters"]
    ]
    (container,) = run.spec["containers"]
    mapped = [{**p, "value": run.volumes.host_path(container, p["value"])} for p in rendered]
    assert json.loads(env["PREDICTIVE_UNIT_PARAMETERS"])[:-1] == mapped  # then the operator's model_uri
    answer = run.predict(photo)
    assert [a["label"] for a in answer][:1] == [top] and len(answer) == count, answer
    assert all(len(a["box"]) == 4 for a in answer if "box" in a), answer
    stores = values["parameters"].get("image_store")
    if stores:
        bucket, prefix = stores.split(",")[0].removeprefix("s3://").split("/", 1)
        s3_server.put(bucket, {prefix + photo: image_bytes(photo)})
        reference = run.answer(json={"jsonData": {"image_uri": f"s3://{bucket}/{prefix}{photo}"}})
        assert reference == answer, "the same photo, posted or fetched by reference"


@pytest.fixture(scope="module")
def s3_endpoint(s3_server: S3Server) -> str:
    """The loopback S3 server holding the image-classifier example's object: models/mobilenet_v2_quant.tar.gz."""
    s3_server.put("models", {"mobilenet_v2_quant.tar.gz": tar_dir(MOBILENET_V2)})
    return s3_server.endpoint


def s3_secrets(sdep: dict, s3_endpoint: str) -> dict[str, dict[str, str]]:
    """The Secret the pod's initializer names (envSecretRefName), holding the loopback S3 server's credentials."""
    secret = {"AWS_ACCESS_KEY_ID": "AKIDEXAMPLE", "AWS_SECRET_ACCESS_KEY": S3Server.SECRET_KEY}
    return {model_initializer(sdep)["envFrom"][0]["secretRef"]["name"]: {**secret, "AWS_ENDPOINT_URL": s3_endpoint}}


def test_node_reboot_offline_serves_the_model_from_the_node_cache(s3_server: S3Server, s3_endpoint, pod_run):
    """The image-classifier example's pod runs, then runs again on the same node as a new pod (fresh
    emptyDirs: the pod was deleted, or the node rebooted) with the S3 server stopped: the initializer
    exits 0 from the hostPath cache, saying the source is unreachable, and the server answers."""
    sdep = kv.render_one([kv.EXAMPLES / "image-classifier.values.yaml"])
    secrets = s3_secrets(sdep, s3_endpoint)

    online = pod_run(sdep)
    owner_line, download_line = online.run_init_containers(secrets)
    assert owner_line.endswith("belongs to 1000:1000 (1 path changed)") and " wrote 2 files " in download_line
    online.start_server()
    first = requests.get(online.url + "/api/v1.0/metadata", timeout=30).json()["custom"]
    assert first["model_source"] == "download"
    online.stop()

    with s3_server.outage():
        offline = pod_run(sdep)
        _, line = offline.run_init_containers(secrets)
        assert " unreachable (cannot reach S3 endpoint" in line and f"fetched {first['model_fetched_at']}" in line
        offline.start_server()
        assert [a["label"] for a in offline.predict("parrot.jpg")][:1] == ["macaw"]
        custom = requests.get(offline.url + "/api/v1.0/metadata", timeout=30).json()["custom"]
    assert custom["model_source"] == "cache-offline" and custom["model_version"] == first["model_version"]


def test_a_pod_with_model_updates_swaps_in_a_new_object_and_keeps_it_through_an_offline_reboot(
    s3_server: S3Server, s3_endpoint, pod_run
):
    """The image-classifier example with parameters.model_poll_interval: the running pod's server looks at modelUri
    through the node's cache with the pod's Secret, and a new object there answers without a restart; the pod
    run again on the node with S3 stopped (a reboot without the uplink) starts with that new version."""
    s3_server.put("models", {"updating.tar.gz": model_tar(A)})
    sdep = kv.render_one(
        [kv.EXAMPLES / "image-classifier.values.yaml"],
        {"modelUri": "s3://models/updating.tar.gz", "parameters.model_poll_interval": 0.5},
    )
    assert kv.sdep_errors(sdep) == [] and all(kv.pod_errors(pod) == [] for pod in kv.pods(sdep))
    secrets = s3_secrets(sdep, s3_endpoint)

    online = pod_run(sdep)
    online.run_init_containers(secrets)
    online.start_server(secrets)
    assert parrot(online) == MACAW
    b = swapped_classes("macaw", "goldfish")
    s3_server.put("models", {"updating.tar.gz": model_tar(b)})
    eventually(lambda: parrot(online) == GOLDFISH, "the new object serves")
    online.stop()

    with s3_server.outage():
        offline = pod_run(sdep)
        _, line = offline.run_init_containers(secrets)
        assert " unreachable (cannot reach S3 endpoint" in line
        offline.start_server(secrets)
        assert parrot(offline) == GOLDFISH
        custom = requests.get(offline.url + "/api/v1.0/metadata", timeout=30).json()["custom"]
    assert custom["model_source"] == "cache-offline" and custom["model_version"] == version_of_tar(b)


def parrot(pod: PodRun) -> str:
    """The pod's top label for parrot.jpg."""
    return pod.predict("parrot.jpg")[0]["label"]
