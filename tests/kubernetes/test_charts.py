"""The Kubernetes side, validated for real without a cluster: the real helm (lint, template) on several
value sets, every rendered SeldonDeployment and every example manifest against the SeldonDeployment CRD's
own schema and Kubernetes' pod schemas, the operator values, and the commands docs/kubernetes.md gives.

helm and kubectl come from `make tools`; without them these tests fail (not skip), saying so.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from edgeservers.settings import Settings
from tests.support import k8s_validation as kv

MODEL_VOLUME_PATH = "/mnt/models"
CACHE_DIR = "/var/cache/edgeservers"  # the hostPath model cache, in the init containers
CACHE_ARGS = ["--cache-dir", CACHE_DIR, "--cache-max", "1G"]

VALUE_SETS: dict[str, dict[str, Any]] = {
    "defaults-https": {"modelUri": "https://example.com/models/mobilenet_v2_1.0_224_quant.tflite"},
    "tflite-nodename": {
        "name": "face-mask-detector",
        "modelUri": "https://github.com/AIZOOTech/FaceMaskDetection/raw/master/models/face_mask_detection.tflite",
        "nodeName": "raspberry",
        "parameters": {
            "input_tensor_name": "data_1",
            "output_tensor_name": "cls_branch_concat_1/concat",
            "postprocess": "none",
        },
    },
    "tflite-nodeselector-secret": {
        "modelUri": "s3://models/mobilenet_v2_quant.tar.gz",
        "envSecretRefName": "seldon-s3-credentials",
        "nodeSelector": {"kubernetes.io/hostname": "raspberry"},
        "parameters": {"postprocess": "classification", "top_k": 3},
    },
    "openvino-image-override": {
        "implementation": "OPENVINO_SERVER",
        "modelUri": "gs://bucket/model.tar.gz",
        "server": {"image": "registry.local:5000/edgeservers:0.1.0-openvino", "grpcWorkers": 1, "gunicornWorkers": 2},
        "nodeSelector": {"kubernetes.io/arch": "amd64"},
        "parameters": {"device": "CPU", "confidence_threshold": 0.25},
    },
    "tflite-coral-pcie-device-plugin": {
        "modelUri": "https://example.com/models/mobilenet_v1_0.25_128_quant_edgetpu.tflite",
        "nodeName": "gateway-1",
        "parameters": {"delegate_options": "device=pci:0"},
        "delegate": {"hostPath": "/opt/coral/lib", "library": "libedgetpu.so.1"},
        "devices": {"resource": "smarter-devices/apex_0", "hostPaths": ["/dev/apex_0"], "group": 1001},
    },
    "both-pinnings-named-unit": {
        "name": "classifier-a",
        "namespace": "edge",
        "unitName": "classifier",
        "replicas": 2,
        "modelUri": "http://10.0.0.5:8000/model.tar.gz",
        "envSecretRefName": "creds",
        "parameters": {"uncertain_store": "s3://retraining/uncertain/", "confidence_threshold": 0.5},
        "nodeName": "pi-7",
        "nodeSelector": {"kubernetes.io/arch": "arm"},
        "tolerations": [],
        "imagePullSecrets": [{"name": "ghcr"}],
    },
}


@pytest.fixture(scope="session", autouse=True)
def tools() -> None:
    try:
        kv.tool("helm"), kv.tool("kubectl")
    except kv.ToolMissing as e:
        pytest.fail(str(e), pytrace=False)


@pytest.fixture(params=sorted(VALUE_SETS))
def value_set(request, tmp_path) -> tuple[str, dict[str, Any], Path]:
    values_file = tmp_path / f"{request.param}.yaml"
    values_file.write_text(yaml.safe_dump(VALUE_SETS[request.param]))
    return request.param, VALUE_SETS[request.param], values_file


def predictor(sdep: dict) -> dict:
    (p,) = sdep["spec"]["predictors"]
    return p


def pod_spec(sdep: dict) -> dict:
    (component,) = predictor(sdep)["componentSpecs"]
    return component["spec"]


def by_name(items: list[dict], name: str) -> dict:
    (item,) = [i for i in items if i["name"] == name]
    return item


def env_of(container: dict) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container.get("env", [])}


# --- helm lint / template on several value sets ------------------------------------------------------


def test_helm_lint(value_set):
    _, _, values_file = value_set
    result = kv.helm("lint", "--strict", str(kv.CHART), "-f", str(values_file))
    assert "0 chart(s) failed" in result.stdout


def test_rendered_manifest_validates_against_crd_and_pod_schemas(value_set):
    _, _, values_file = value_set
    sdep = kv.render_one([values_file])
    assert kv.manifest_errors(sdep) == []


def test_rendered_manifest_has_the_edge_shape(value_set):
    """no-engine, the explicit initializer the operator recognises, probes, non-root, workers, pinning."""
    name, values, values_file = value_set
    sdep = kv.render_one([values_file], release="rel", namespace="ns")
    unit = values.get("unitName", "model")
    secret = values.get("envSecretRefName")

    assert sdep["metadata"]["name"] == values.get("name", "rel")
    assert sdep["metadata"]["namespace"] == values.get("namespace", "ns")
    p = predictor(sdep)
    assert p["annotations"]["seldon.io/no-engine"] == "true"
    assert p["replicas"] == values.get("replicas", 1)
    graph = p["graph"]
    assert graph["name"] == unit and graph["type"] == "MODEL"
    assert graph["implementation"] == values.get("implementation", "TFLITE_SERVER")
    assert graph["modelUri"] == values["modelUri"]
    assert graph.get("envSecretRefName") == secret
    assert "model_uri" not in {x["name"] for x in graph.get("parameters", [])}  # the operator adds it

    spec = pod_spec(sdep)
    # The operator's names (model_initializer_injector.go): its injection then finds ours and adds nothing.
    # Before it, the step that gives the model cache's hostPath directory to the pod's user.
    owner, init = spec["initContainers"]
    assert owner["name"] == f"{unit}-cache-owner" and init["name"] == f"{unit}-model-initializer"
    assert (
        init["image"]
        == owner["image"]
        == yaml.safe_load((kv.CHART / "values.yaml").read_text())["storageInitializer"]["image"]
    )
    assert init["args"] == [values["modelUri"], MODEL_VOLUME_PATH, *CACHE_ARGS]
    assert init.get("envFrom") == ([{"secretRef": {"name": secret}}] if secret else None)
    volume = by_name(spec["volumes"], f"{unit}-provision-location")
    assert "emptyDir" in volume
    assert by_name(init["volumeMounts"], volume["name"]) == {"name": volume["name"], "mountPath": MODEL_VOLUME_PATH}

    (server,) = spec["containers"]
    assert server["name"] == unit
    reads_s3 = {"image_store", "uncertain_store"} & set(values.get("parameters", {}))
    assert server.get("envFrom") == ([{"secretRef": {"name": secret}}] if secret and reads_s3 else None)
    assert server.get("image") == values.get("server", {}).get("image")  # unset: the operator's predictor_servers
    assert by_name(server["volumeMounts"], volume["name"]) == {
        "name": volume["name"],
        "mountPath": MODEL_VOLUME_PATH,
        "readOnly": True,
    }
    env = env_of(server)
    server_values = values.get("server", {})
    assert (
        env["MODEL_NAME"]
        == {"TFLITE_SERVER": "TFLiteServer", "OPENVINO_SERVER": "OpenVINOServer"}[graph["implementation"]]
    )
    assert env["GUNICORN_WORKERS"] == str(server_values.get("gunicornWorkers", 1))
    assert env["GUNICORN_THREADS"] == str(server_values.get("gunicornThreads", 1))
    assert env["GRPC_WORKERS"] == str(server_values.get("grpcWorkers", 0))
    assert {(x["name"], x["containerPort"]) for x in server["ports"]} == {
        ("http", 9000),
        ("grpc", 9500),
        ("metrics", 6000),
    }
    for probe, path in (
        ("startupProbe", "/health/ping"),
        ("readinessProbe", "/health/status"),
        ("livenessProbe", "/health/ping"),
    ):
        assert server[probe]["httpGet"] == {"path": path, "port": "http"}

    for container in (init, server):
        sc = container["securityContext"]
        assert sc["runAsNonRoot"] is True and sc["runAsUser"] > 0
        assert sc["allowPrivilegeEscalation"] is False and sc["readOnlyRootFilesystem"] is True
        assert sc["capabilities"] == {"drop": ["ALL"]}
        assert by_name(container["volumeMounts"], "tmp")["mountPath"] == "/tmp"  # the one writable place
        assert container["resources"]["limits"]["memory"]
    assert "securityContext" not in spec  # the operator overwrites the pod-level one: container-level only

    assert spec.get("nodeName") == values.get("nodeName")
    assert spec.get("nodeSelector") == values.get("nodeSelector")
    assert spec.get("imagePullSecrets") == values.get("imagePullSecrets")
    default_toleration = [{"key": "node-role.kubernetes.io/edge", "operator": "Exists", "effect": "NoSchedule"}]
    assert spec.get("tolerations") == (values.get("tolerations", default_toleration) or None)


def test_parameters_carry_the_server_settings_types():
    """Every parameter the chart accepts is one the server knows, typed as the server's Settings field."""
    schema = json.loads((kv.CHART / "values.schema.json").read_text())
    chart_names = set(schema["properties"]["parameters"]["properties"])
    hints = typing.get_type_hints(Settings)
    assert chart_names == {f.name for f in dataclasses.fields(Settings)} - {"model_uri"}

    samples = {int: 3, float: 0.25, bool: True, str: "x"}
    kinds = {
        name: next(t for t in samples if t in (typing.get_args(hints[name]) or (hints[name],)))
        for name in chart_names - CHART_SETS_WITH_UPDATES
    }
    uri = "s3://models/x"
    sdep = kv.render_one(set_values={"modelUri": uri, "parameters": {n: samples[k] for n, k in kinds.items()}})
    rendered = {x["name"]: x for x in predictor(sdep)["graph"]["parameters"]}
    seldon_type = {int: "INT", float: "FLOAT", bool: "BOOL", str: "STRING"}
    for name, kind in kinds.items():
        assert rendered[name]["type"] == seldon_type[kind], name
        assert rendered[name]["value"] == (str(samples[kind]).lower() if kind is bool else str(samples[kind]))
    assert {rendered[n]["type"] for n in CHART_SETS_WITH_UPDATES} == {"STRING"}
    assert rendered["model_update_uri"]["value"] == uri
    assert kv.manifest_errors(sdep) == []


# Values as a user writes them in a values file (where Helm reads every number as a float64), with what the
# server must get after Seldon's own parser: (chart type, YAML text, value). Integers of any size in digits,
# floats by value, quoted strings untouched.
VALUES_AS_WRITTEN: list[tuple[str, str, Any]] = [
    *[("INT", text, int(text)) for text in ("0", "7", "999999", "1000000", "8388608", "16777216", "20000000")],
    *[("INT", text, int(text)) for text in ("2147483647", "4294967296", "9007199254740992", "-1")],
    ("INT", "1.0e+6", 1_000_000),
    ("INT", "1e7", 10_000_000),
    ("INT", '"12"', 12),
    *[("FLOAT", text, float(text)) for text in ("0", "0.6", "0.1", "1", "2.5", "10", "0.000001", "1.5e-7")],
    *[("FLOAT", text, float(text)) for text in ("123456.789", "1234567.5", "3.141592653589793", "1e6", "2e+21")],
    ("FLOAT", '"0.25"', 0.25),
    *[("STRING", text, text) for text in ("20240101", "1000000", "2.5", "v1", "RGB")],
    ("STRING", '"1e6"', "1e6"),
    ("STRING", '"007"', "007"),
    ("BOOL", "true", True),
    ("BOOL", "false", False),
    ("BOOL", '"yes"', True),
]


def _assign_parameters(cases: list[tuple[str, str, Any]], names: dict[str, list[str]]) -> list[dict[str, Any]]:
    """Cases spread over as few renders as can hold them: each render uses each parameter once."""
    renders: list[dict[str, Any]] = []
    for case in cases:
        for render in renders:
            free = [n for n in names[case[0]] if n not in render]
            if free:
                render[free[0]] = case
                break
        else:
            renders.append({names[case[0]][0]: case})
    return renders


def test_parameter_values_reach_the_server_as_written(tmp_path):
    """Every value above, written in a values file and rendered, is what Seldon's parser gives the server:
    an INT as digits (no 8.388608e+06), a FLOAT with its value, a string as given."""
    from seldon_core.microservice import parse_parameters

    given = dict.fromkeys(set(_chart_parameter_names()) - CHART_SETS_WITH_UPDATES, "1")
    every_name = kv.render_one(set_values={"modelUri": "s3://models/x", "parameters": given})
    chart_types = {name: rendered["type"] for name, rendered in _typed_names(every_name).items()}
    names = {
        t: sorted(
            n for n, k in chart_types.items() if k == t and n not in {"graceful_timeout", *CHART_SETS_WITH_UPDATES}
        )
        for t in SELDON_TYPES
    }
    for i, render in enumerate(_assign_parameters(VALUES_AS_WRITTEN, names)):
        values = tmp_path / f"values-{i}.yaml"
        values.write_text(
            "modelUri: s3://models/x\nparameters:\n"
            + "".join(f"  {name}: {text}\n" for name, (_, text, _) in render.items())
        )
        rendered = _typed_names(kv.render_one([values]))
        assert set(rendered) - CHART_SETS_WITH_UPDATES == set(render)
        parsed = parse_parameters(list(rendered.values()))
        for name, (kind, text, expected) in render.items():
            assert rendered[name]["type"] == kind, name
            where = f"{name}: {text} rendered as {rendered[name]['value']!r}"
            assert parsed[name] == expected and type(parsed[name]) is type(expected), where
            if kind == "INT" and not text.startswith('"'):
                assert rendered[name]["value"].lstrip("-").isdigit(), where


SELDON_TYPES = ("INT", "FLOAT", "STRING", "BOOL")
CHART_SETS_WITH_UPDATES = {
    "model_update_uri",
    "model_cache_dir",
}  # with model_poll_interval, from modelUri and the cache


def _chart_parameter_names() -> list[str]:
    schema = json.loads((kv.CHART / "values.schema.json").read_text())
    return sorted(schema["properties"]["parameters"]["properties"])


def _typed_names(sdep: dict) -> dict[str, dict[str, str]]:
    return {p["name"]: p for p in predictor(sdep)["graph"].get("parameters") or []}


@pytest.mark.parametrize(
    "set_values, message",
    [
        ({}, "modelUri is required"),
        ({"modelUri": "x", "implementation": "TENSORFLOW_SERVER"}, "implementation"),
        ({"modelUri": "x", "parameters": {"topk": 3}}, "topk"),
        ({"modelUri": "x", "parameters": {"model_uri": "/elsewhere"}}, "model_uri"),
        ({"modelUri": "x", "securityContext": {"runAsUser": 0, "runAsGroup": 0}}, "runAsUser"),
        ({"modelUri": "x", "name": "Not_A_Name"}, "name"),
        ({"modelUri": "x", "server": {"grpcWorkers": -1}}, "grpcWorkers"),
        (
            {"modelUri": "x", "parameters": {"graceful_timeout": 40}},
            "must be below server.terminationGracePeriodSeconds",
        ),
        ({"modelUri": "x", "server": {"terminationGracePeriodSeconds": 15}}, "graceful_timeout"),
        ({"modelUri": "x", "modelCache": {"hostPath": "relative/dir"}}, "hostPath"),
        ({"modelUri": "x", "modelCache": {"maxSize": "a lot"}}, "maxSize"),
        (
            {"modelUri": "s3://models/m", "parameters": {"model_poll_interval": 30}, "modelCache": {"enabled": False}},
            "parameters.model_poll_interval needs modelCache.enabled",
        ),
        (
            {"modelUri": "/models/m", "parameters": {"model_poll_interval": 30}},
            'parameters.model_poll_interval needs a modelUri of s3://, https:// or http:// to look at, not "/models/m"',
        ),
        (
            {"modelUri": "s3://models/m", "parameters": {"model_poll_interval": 30, "model_cache_dir": "/cache"}},
            "the chart sets model_update_uri (modelUri) and model_cache_dir (the model cache's mount) itself",
        ),
        (
            {
                "modelUri": "x",
                "networkPolicy": {"enabled": True, "allowNamespaces": ["Not A Namespace"], "metricsNamespaces": []},
            },
            "allowNamespaces",
        ),
    ],
)
def test_helm_refuses_bad_values(set_values, message):
    result = kv.helm("template", "edge", str(kv.CHART), *kv.value_args(set_values=set_values), check=False)
    assert result.returncode != 0 and message in result.stderr, result.stderr


# --- the node-local model cache -----------------------------------------------------------------------


def test_model_cache_is_a_hostpath_given_to_the_pods_user_by_a_chown_only_root_step():
    """The cache volume: a hostPath (DirectoryOrCreate) in both init containers, never in the server; the
    step before the initializer runs as root with CHOWN alone and gives it to runAsUser:runAsGroup. The
    pod passes the pod schemas of Kubernetes 1.28 and 1.35."""
    sdep = kv.render_one(
        set_values={"modelUri": "s3://b/m", "securityContext": {"runAsUser": 1234, "runAsGroup": 5678}}
    )
    assert kv.manifest_errors(sdep) == []
    spec = pod_spec(sdep)
    assert by_name(spec["volumes"], "model-cache") == {
        "name": "model-cache",
        "hostPath": {"path": "/var/lib/edgeservers/models", "type": "DirectoryOrCreate"},
    }
    owner, init = spec["initContainers"]
    assert owner["args"] == ["--cache-dir", CACHE_DIR, "--prepare-cache", "1234:5678"]
    assert owner["securityContext"] == {
        "runAsNonRoot": False,
        "runAsUser": 0,
        "runAsGroup": 0,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"], "add": ["CHOWN"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert "command" not in owner  # the initializer image's ENTRYPOINT, like the download itself
    for container in (owner, init):
        assert by_name(container["volumeMounts"], "model-cache")["mountPath"] == CACHE_DIR
    assert init["securityContext"]["runAsUser"] == 1234 and init["securityContext"]["runAsNonRoot"] is True
    assert "model-cache" not in {m["name"] for m in _server(sdep)["volumeMounts"]}


def test_model_cache_off_gives_a_plain_download_and_no_hostpath():
    sdep = kv.render_one(set_values={"modelUri": "s3://b/m", "modelCache": {"enabled": False}})
    assert kv.manifest_errors(sdep) == []
    spec = pod_spec(sdep)
    (init,) = spec["initContainers"]
    assert init["args"] == ["s3://b/m", MODEL_VOLUME_PATH]
    assert all("hostPath" not in v for v in spec["volumes"])


def test_model_cache_without_the_root_step_for_prepared_nodes():
    spec = pod_spec(kv.render_one(set_values={"modelUri": "s3://b/m", "modelCache": {"prepare": False}}))
    (init,) = spec["initContainers"]
    assert init["args"][2:] == CACHE_ARGS and all(c["securityContext"]["runAsNonRoot"] for c in spec["initContainers"])


# --- the accelerator: delegate library and devices, never privileged ----------------------------------------


def _accelerated(values: dict) -> tuple[dict, dict, dict]:
    """Rendered with `values` on top of a model URI: (the graph's parameters by name, the server container,
    the pod spec); the manifest validates."""
    sdep = kv.render_one(set_values={"modelUri": "x", **values})
    assert kv.manifest_errors(sdep) == []
    params = {x["name"]: x["value"] for x in predictor(sdep)["graph"].get("parameters", [])}
    return params, _server(sdep), pod_spec(sdep)


def test_a_delegate_directory_from_the_node_is_mounted_read_only_and_named_in_the_parameters():
    params, server, spec = _accelerated({"delegate": {"hostPath": "/opt/coral/lib", "library": "libedgetpu.so.1"}})
    assert params["delegate"] == "/opt/edgeservers/delegate/libedgetpu.so.1"
    assert by_name(server["volumeMounts"], "delegate") == {
        "name": "delegate",
        "mountPath": "/opt/edgeservers/delegate",
        "readOnly": True,
    }
    assert by_name(spec["volumes"], "delegate")["hostPath"] == {"path": "/opt/coral/lib", "type": "Directory"}
    assert env_of(server)["LD_LIBRARY_PATH"] == "/opt/edgeservers/delegate"  # libusb beside libedgetpu
    assert "delegate" not in {m["name"] for m in _init_of(spec)["volumeMounts"]}


def test_a_delegate_in_the_image_is_only_named():
    params, server, spec = _accelerated({"delegate": {"library": "/opt/edgeservers-delegate/libvx_delegate.so"}})
    assert params["delegate"] == "/opt/edgeservers-delegate/libvx_delegate.so"
    assert "LD_LIBRARY_PATH" not in env_of(server)
    assert [v["name"] for v in spec["volumes"] if "hostPath" in v] == ["model-cache"]


def test_devices_without_privileged():
    """Device files mounted from the node, the device plugin's resource as a limit, the devices' group as the
    server's group; the pod stays unprivileged, with no capabilities, as without an accelerator."""
    _, server, spec = _accelerated(
        {
            "devices": {
                "resource": "squat.ai/coral",
                "count": 2,
                "hostPaths": ["/dev/bus/usb", "/dev/apex_0"],
                "group": 46,
            }
        }
    )
    mounts = {m["mountPath"]: m for m in server["volumeMounts"]}
    for i, path in enumerate(["/dev/bus/usb", "/dev/apex_0"]):
        assert mounts[path]["name"] == f"device-{i}" and not mounts[path].get("readOnly")
        assert by_name(spec["volumes"], f"device-{i}")["hostPath"] == {"path": path}
    assert server["resources"]["limits"]["squat.ai/coral"] == 2
    assert server["resources"]["limits"]["memory"] == "512Mi"  # server.resources kept
    assert server["securityContext"]["runAsGroup"] == 46
    assert _init_of(spec)["securityContext"]["runAsGroup"] == 1000  # the initializer opens no device
    for container in (server, _init_of(spec)):
        sc = container["securityContext"]
        assert "privileged" not in sc and sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"] == {"drop": ["ALL"]} and sc["runAsNonRoot"] is True
    assert "securityContext" not in spec and "hostNetwork" not in spec


def test_no_accelerator_renders_nothing_of_it():
    _, server, spec = _accelerated({})
    assert {v["name"] for v in spec["volumes"]} == {"model-provision-location", "tmp", "model-cache"}
    assert set(server["resources"]["limits"]) == {"cpu", "memory"}
    assert server["securityContext"]["runAsGroup"] == 1000


def _init_of(spec: dict) -> dict:
    """The model initializer (after the model cache's owner step)."""
    (init,) = [c for c in spec["initContainers"] if c["name"].endswith("-model-initializer")]
    return init


@pytest.mark.parametrize(
    "values, message",
    [
        ({"delegate": {"hostPath": "/opt/coral/lib"}}, "delegate.hostPath needs delegate.library"),
        (
            {"delegate": {"hostPath": "/opt/coral/lib", "library": "/opt/coral/lib/libedgetpu.so.1"}},
            "the library's file name in that directory",
        ),
        (
            {"delegate": {"library": "libedgetpu.so.1"}, "parameters": {"delegate": "libedgetpu.so.1"}},
            "delegate.library (with delegate.hostPath) or parameters.delegate, not both",
        ),
        ({"delegate": {"hostPath": "opt/coral"}}, "hostPath"),
        ({"devices": {"hostPaths": ["/etc/shadow"]}}, "hostPaths"),
        ({"devices": {"resource": "coral usb"}}, "resource"),
        ({"devices": {"group": 0}}, "group"),
        ({"devices": {"privileged": True}}, "privileged"),
    ],
)
def test_helm_refuses_bad_accelerator_values(values, message):
    result = kv.helm(
        "template", "edge", str(kv.CHART), *kv.value_args(set_values={"modelUri": "x", **values}), check=False
    )
    assert result.returncode != 0 and message in result.stderr, result.stderr


# --- NetworkPolicy (exposure) ------------------------------------------------------------------------


def test_no_network_policy_by_default():
    assert [d["kind"] for d in kv.render(set_values={"modelUri": "x"})] == ["SeldonDeployment"]


def test_network_policy_admits_only_the_listed_namespaces():
    docs = kv.render(
        set_values={
            "modelUri": "x",
            "name": "cam",
            "networkPolicy": {
                "enabled": True,
                "allowNamespaces": ["apps", "edge"],
                "metricsNamespaces": ["monitoring"],
            },
        },
        namespace="ns",
    )
    (policy,) = [d for d in docs if d["kind"] == "NetworkPolicy"]
    (sdep,) = [d for d in docs if d["kind"] == "SeldonDeployment"]
    errors = sorted(
        f"{kv.where(e)}: {e.message}" for e in kv.k8s_validator("networkpolicy-networking-v1").iter_errors(policy)
    )
    assert errors == []
    assert policy["metadata"]["namespace"] == sdep["metadata"]["namespace"] == "ns"
    # the label the Seldon operator puts on every pod of a SeldonDeployment
    assert policy["spec"]["podSelector"] == {"matchLabels": {"seldon-deployment-id": sdep["metadata"]["name"]}}
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    rules = {
        tuple(p["port"] for p in r["ports"]): r["from"][0]["namespaceSelector"]["matchExpressions"][0]["values"]
        for r in policy["spec"]["ingress"]
    }
    assert rules == {(9000, 9500): ["apps", "edge"], (6000,): ["monitoring"]}
    ports = {p["containerPort"] for p in pod_spec(sdep)["containers"][0]["ports"]}
    assert ports == {9000, 9500, 6000}


def test_an_enabled_policy_without_namespaces_admits_nobody():
    docs = kv.render(
        set_values={"modelUri": "x", "networkPolicy": {"enabled": True, "allowNamespaces": [], "metricsNamespaces": []}}
    )
    (policy,) = [d for d in docs if d["kind"] == "NetworkPolicy"]
    assert policy["spec"].get("ingress") in (None, [])


def test_termination_grace_period_is_above_the_servers_graceful_timeout():
    spec = pod_spec(kv.render_one(set_values={"modelUri": "x"}))
    assert spec["terminationGracePeriodSeconds"] == 30 > Settings.graceful_timeout


# --- the validation itself catches broken manifests --------------------------------------------------


def _init(doc):
    (init,) = [c for c in pod_spec(doc)["initContainers"] if c["name"].endswith("-model-initializer")]
    return init


def _server(doc):
    return pod_spec(doc)["containers"][0]


BREAKAGES: dict[str, tuple[Callable[[dict], None], str]] = {
    "parameter value not a string": (
        lambda d: predictor(d)["graph"]["parameters"][0].update(value=3),
        "is not of type 'string'",
    ),
    "parameter without type": (
        lambda d: predictor(d)["graph"]["parameters"][0].pop("type"),
        "'type' is a required property",
    ),
    "graph without name": (lambda d: predictor(d)["graph"].pop("name"), "'name' is a required property"),
    "misspelt graph field": (lambda d: predictor(d)["graph"].update(modelURI="x"), "'modelURI' was unexpected"),
    "replicas as text": (lambda d: predictor(d).update(replicas="1"), "is not of type 'integer'"),
    "misspelt container field": (
        lambda d: _server(d).update(imagePulPolicy="Always"),
        "'imagePulPolicy' was unexpected",
    ),
    "port as text": (lambda d: _server(d)["ports"][0].update(containerPort="9000"), "is not of type 'integer'"),
    "args not a list": (lambda d: _init(d).update(args="s3://a /mnt/models"), "is not of type 'array'"),
    "mount of a missing volume": (lambda d: pod_spec(d)["volumes"].pop(0), "names no volume"),
    "two mounts at one path": (
        lambda d: _server(d)["volumeMounts"].append({"name": "tmp", "mountPath": "/mnt/models"}),
        "2 mounts at /mnt/models",
    ),
    "bad memory quantity": (
        lambda d: _server(d)["resources"]["limits"].update(memory="half a gig"),
        "is not a quantity",
    ),
    "probe on an undeclared port": (
        lambda d: _server(d)["readinessProbe"]["httpGet"].update(port="rest"),
        "does not declare",
    ),
    "duplicate container name": (lambda d: _init(d).update(name="model"), "used 2 times"),
    "wrong kind": (lambda d: d.update(kind="SeldonDeploy"), "expected machinelearning.seldon.io/v1 SeldonDeployment"),
}


@pytest.mark.parametrize("breakage", sorted(BREAKAGES))
def test_validation_fails_on_a_broken_manifest(breakage):
    sdep = kv.render_one(set_values={"modelUri": "x", "parameters": {"top_k": 3}})
    assert kv.manifest_errors(sdep) == []
    broken = copy.deepcopy(sdep)
    mutate, message = BREAKAGES[breakage]
    mutate(broken)
    errors = kv.manifest_errors(broken)
    assert any(message in e for e in errors), errors


# --- plain example manifests ---------------------------------------------------------------------------


EXAMPLES = kv.example_pairs()


def test_these_are_the_examples():
    assert {m.name for _, m in EXAMPLES} == {
        "armnn-cpuacc.yaml",
        "camera-loop.yaml",
        "coral-usb.yaml",
        "face-mask-raspberry.yaml",
        "image-classifier.yaml",
        "imx8mp-npu.yaml",
        "openvino-classifier.yaml",
        "two-tier-edge.yaml",
        "two-tier-gateway.yaml",
    }


def test_accelerator_examples_name_their_delegate_and_devices():
    """docs/accelerators.md's three recipes: Coral USB (library from the node, device plugin, plugdev),
    Arm NN (library from the node, no device, CPU fallback), NXP NPU (library in a user image, galcore)."""
    examples = {m.name: yaml.safe_load(m.read_text()) for _, m in EXAMPLES}
    coral, armnn, npu = (examples[name] for name in ("coral-usb.yaml", "armnn-cpuacc.yaml", "imx8mp-npu.yaml"))
    params = {
        name: {x["name"]: x["value"] for x in predictor(d)["graph"]["parameters"]} for name, d in examples.items()
    }
    assert params["coral-usb.yaml"]["delegate"] == "/opt/edgeservers/delegate/libedgetpu.so.1"
    assert params["armnn-cpuacc.yaml"]["delegate"] == "/opt/edgeservers/delegate/libarmnnDelegate.so"
    assert params["armnn-cpuacc.yaml"]["delegate_fallback"] == "cpu"
    assert params["imx8mp-npu.yaml"]["delegate"] == "/opt/edgeservers-delegate/libvx_delegate.so"
    assert _server(coral)["resources"]["limits"]["squat.ai/coral"] == 1
    assert "/dev/bus/usb" in {m["mountPath"] for m in _server(coral)["volumeMounts"]}
    assert _server(npu)["resources"]["limits"]["smarter-devices/galcore"] == 1
    assert "/dev/galcore" in {m["mountPath"] for m in _server(npu)["volumeMounts"]}
    assert _server(npu)["image"] == "registry.local:5000/edgeservers:0.1.0-vx"
    assert not [v for v in pod_spec(armnn)["volumes"] if v.get("hostPath", {}).get("path", "").startswith("/dev")]


@pytest.mark.parametrize("values_file, manifest", EXAMPLES, ids=[m.name for _, m in EXAMPLES])
def test_example_validates_and_matches_the_chart(values_file, manifest):
    docs = [d for d in yaml.safe_load_all(manifest.read_text()) if d]
    assert len(docs) == 1
    assert kv.manifest_errors(docs[0]) == []
    assert docs[0] == kv.render_example(values_file), f"{manifest.name} is stale: run `make examples`"
    kv.helm("lint", "--strict", str(kv.CHART), "-f", str(values_file))


def test_face_mask_example_is_pinned_to_the_pi_and_downloads_over_https():
    sdep = yaml.safe_load((kv.EXAMPLES / "face-mask-raspberry.yaml").read_text())
    graph = predictor(sdep)["graph"]
    params = {x["name"]: x["value"] for x in graph["parameters"]}
    assert graph["implementation"] == "TFLITE_SERVER" and graph["modelUri"].startswith("https://")
    assert params["input_tensor_name"] == "data_1"
    assert "cls_branch_concat_1/concat" in params["output_tensor_name"].split(",")
    assert pod_spec(sdep)["nodeName"] == "raspberry"
    assert _init(sdep)["args"] == [graph["modelUri"], MODEL_VOLUME_PATH, *CACHE_ARGS]


def test_openvino_example_uses_the_openvino_server():
    sdep = yaml.safe_load((kv.EXAMPLES / "openvino-classifier.yaml").read_text())
    assert predictor(sdep)["graph"]["implementation"] == "OPENVINO_SERVER"
    assert env_of(_server(sdep))["MODEL_NAME"] == "OpenVINOServer"


# --- operator values ---------------------------------------------------------------------------------


def operator_values() -> dict:
    return yaml.safe_load(kv.OPERATOR_VALUES.read_text())


def test_operator_values_register_both_servers_in_the_current_format():
    """predictor_servers.<NAME>.protocols.seldon.{image, defaultImageVersion} (operator PredictorServerConfig);
    the operator runs image:defaultImageVersion (PrepackImageName)."""
    chart = yaml.safe_load((kv.CHART / "Chart.yaml").read_text())
    servers = operator_values()["predictor_servers"]
    assert set(servers) == {"TFLITE_SERVER", "OPENVINO_SERVER"}
    images = {}
    for name, config in servers.items():
        assert set(config) == {"protocols"}, "the rest:/grpc: form was dropped in Seldon Core 1.3"
        assert set(config["protocols"]) == {"seldon"}
        seldon = config["protocols"]["seldon"]
        assert set(seldon) == {"image", "defaultImageVersion"}
        assert ":" not in seldon["image"].rsplit("/", 1)[-1], "the tag belongs in defaultImageVersion"
        assert isinstance(seldon["defaultImageVersion"], str)
        images[name] = f"{seldon['image']}:{seldon['defaultImageVersion']}"
    version = chart["appVersion"]
    repository = images["TFLITE_SERVER"].rsplit(":", 1)[0]  # where mk/images.mk says (tests/unit/test_version.py)
    assert images == {"TFLITE_SERVER": f"{repository}:{version}", "OPENVINO_SERVER": f"{repository}:{version}-openvino"}


def test_operator_storage_initializer_is_ours():
    """storageInitializer as the operator reads it (StorageInitializerConfig: image and four quantities)."""
    config = operator_values()["storageInitializer"]
    assert "image" in config and set(config) <= {"image", "cpuRequest", "cpuLimit", "memoryRequest", "memoryLimit"}
    for key in set(config) - {"image"}:
        assert isinstance(config[key], str) and kv.QUANTITY.match(config[key]), key
    chart_values = yaml.safe_load((kv.CHART / "values.yaml").read_text())
    assert config["image"] == chart_values["storageInitializer"]["image"]


# --- the commands in docs/kubernetes.md ----------------------------------------------------------------


def test_docs_operator_upgrade_commands_give_the_same_values(tmp_path):
    """The `-f charts/operator-values.yaml` form and the `--set` form of `helm upgrade` set the same values, on the
    operator pinned to 1.17.1 (1.18 is under the Business Source License) in seldon-system, keeping other values."""
    upgrades = kv.find_command("helm", "upgrade", "seldon-core", "seldonio/seldon-core-operator")
    assert len(upgrades) == 2
    value_flags = ("-f", "--set-string")
    for command in upgrades:
        following = dict(zip(command, command[1:], strict=False))  # each argument -> the one after it
        assert following["--version"] == "1.17.1" and following["-n"] == "seldon-system", command
        assert {"--install", "--reuse-values"} <= set(command), command
    # A throwaway chart that prints its values: helm itself merges -f / --set.
    echo = tmp_path / "echo"
    (echo / "templates").mkdir(parents=True)
    (echo / "Chart.yaml").write_text("apiVersion: v2\nname: echo\nversion: 0.0.1\n")
    (echo / "templates" / "values.yaml").write_text("{{ toYaml .Values }}\n")
    rendered = []
    for command in upgrades:
        flags = [a for i, a in enumerate(command) if a in value_flags or command[i - 1] in value_flags]
        (values,) = [d for d in yaml.safe_load_all(kv.helm("template", "x", str(echo), *flags).stdout) if d]
        rendered.append(values)
    assert rendered[0] == rendered[1] == operator_values()


def test_docs_model_commands_render_what_the_tests_validate():
    """`helm install ... charts/edge-model -f <example values>` renders the example manifest that
    `kubectl apply -f` installs, and both validate (test_example_validates_and_matches_the_chart)."""
    (install,) = kv.find_command("helm", "install")
    chart_at = install.index("charts/edge-model")
    values_files = [install[i + 1] for i, a in enumerate(install) if a == "-f"]
    assert values_files, install
    release = install[2]
    flags = install[chart_at + 1 :]
    namespace = flags[flags.index("-n") + 1] if "-n" in flags else "default"
    out = kv.helm("template", release, "charts/edge-model", *flags).stdout
    (sdep,) = [d for d in yaml.safe_load_all(out) if d]
    assert sdep["metadata"]["namespace"] == namespace
    assert kv.manifest_errors(sdep) == []
    applies = kv.find_command("kubectl", "apply")
    applied = [a[a.index("-f") + 1] for a in applies]
    for values_file in values_files:
        manifest = values_file.replace(".values.yaml", ".yaml")
        assert manifest in applied, f"docs should `kubectl apply -f {manifest}` too"
        assert kv.plain(sdep) == yaml.safe_load((kv.ROOT / manifest).read_text())


def test_accelerator_doc_commands_render_what_the_tests_validate():
    """docs/accelerators.md's `helm install` of each recipe renders a valid manifest, the example's."""
    installs = [c for c in kv.doc_commands(kv.ROOT / "docs" / "accelerators.md") if c[:2] == ["helm", "install"]]
    assert len(installs) == 3
    for install in installs:
        flags = install[install.index("charts/edge-model") + 1 :]
        (sdep,) = [
            d for d in yaml.safe_load_all(kv.helm("template", install[2], "charts/edge-model", *flags).stdout) if d
        ]
        assert kv.manifest_errors(sdep) == []
        values_file = kv.ROOT / flags[flags.index("-f") + 1]
        assert kv.plain(sdep)["spec"] == kv.render_example(values_file)["spec"]


def test_docs_predict_call_is_a_seldon_rest_predict():
    curls = [c for c in kv.doc_commands() if c[0] == "curl"]
    assert any(
        "/api/v1.0/predictions" in " ".join(c) and any(a.startswith("binData=@images/") for a in c) for c in curls
    ), curls


def test_docs_secret_command_makes_the_secret_the_examples_use():
    """The doc's `kubectl create secret` works offline (client dry run), validates, and carries the
    environment variable names the storage initializer reads."""
    (create,) = kv.find_command("kubectl", "create", "secret", "generic")
    result = kv.run_tool("kubectl", *create[1:], "--dry-run=client", "-o", "yaml")
    secret = yaml.safe_load(result.stdout)
    errors = sorted(f"{kv.where(e)}: {e.message}" for e in kv.k8s_validator("secret-v1").iter_errors(secret))
    assert errors == []
    example = yaml.safe_load((kv.EXAMPLES / "image-classifier.yaml").read_text())
    assert secret["metadata"]["name"] == predictor(example)["graph"]["envSecretRefName"]
    assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= set(secret["data"])
    assert set(secret["data"]) <= {  # the S3 environment edgeservers/storage/s3.py reads
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_ENDPOINT_URL",
        "S3_ENDPOINT",
        "S3_USE_HTTPS",
        "USE_SSL",
        "S3_VERIFY_SSL",
        "AWS_CA_BUNDLE",
        "AWS_REGION",
        "AWS_DEFAULT_REGION",
    }


def test_missing_tools_fail_with_the_fix(monkeypatch, tmp_path):
    monkeypatch.setenv("HELM", str(tmp_path / "no-helm"))
    with pytest.raises(kv.ToolMissing, match="make tools"):
        kv.helm("version")
