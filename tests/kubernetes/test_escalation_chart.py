"""The two-tier recipe on Kubernetes: the examples name each other, the chart mounts the escalation's headers from
a Secret, and docs/pipelines.md's install commands render valid manifests."""

from __future__ import annotations

import yaml

from tests.support import k8s_validation as kv
from tests.support.paths import ROOT


def test_the_two_tier_examples_name_each_other():
    """charts/examples/two-tier-edge.yaml escalates to the Service and OIP model name two-tier-gateway.yaml serves."""

    def graph(name: str) -> tuple[dict, dict]:
        sdep = yaml.safe_load((ROOT / "charts" / "examples" / f"{name}.yaml").read_text())
        predictor = sdep["spec"]["predictors"][0]
        return sdep, {p["name"]: p["value"] for p in predictor["graph"]["parameters"]}

    gateway, served_as = graph("two-tier-gateway")
    _, edge = graph("two-tier-edge")
    service = f"{gateway['metadata']['name']}-{gateway['spec']['predictors'][0]['name']}"
    assert edge["escalate_url"] == (
        f"http://{service}.default.svc.cluster.local:9000/v2/models/{served_as['model_name']}/infer"
    )
    assert gateway["spec"]["predictors"][0]["graph"]["implementation"] == "OPENVINO_SERVER"
    assert float(edge["confidence_threshold"]) > 0 and float(edge["escalate_timeout"]) > 0


def test_the_chart_mounts_the_escalation_headers_from_a_secret():
    values = {
        "modelUri": "x",
        "escalateHeadersSecret": "gateway-token",
        "parameters": {"escalate_url": "http://g/v2/models/m"},
    }
    sdep = kv.render_one(set_values=values)
    assert kv.manifest_errors(sdep) == []
    predictor = sdep["spec"]["predictors"][0]
    params = {p["name"]: p["value"] for p in predictor["graph"]["parameters"]}
    assert params["escalate_headers_file"] == "/etc/edgeservers/escalate/headers"
    spec = predictor["componentSpecs"][0]["spec"]
    (volume,) = [v for v in spec["volumes"] if v["name"] == "escalate-headers"]
    assert volume["secret"]["secretName"] == "gateway-token" and volume["secret"]["items"] == [
        {"key": "headers", "path": "headers"}
    ]
    (mount,) = [m for m in spec["containers"][0]["volumeMounts"] if m["name"] == "escalate-headers"]
    assert mount == {"name": "escalate-headers", "mountPath": "/etc/edgeservers/escalate", "readOnly": True}
    both = {**values, "parameters": {**values["parameters"], "escalate_headers_file": "/x"}}
    result = kv.helm("template", "edge", str(kv.CHART), *kv.value_args(set_values=both), check=False)
    assert result.returncode != 0 and "set escalateHeadersSecret or parameters.escalate_headers_file" in result.stderr


def test_the_pipeline_recipes_install_the_examples_they_name():
    """docs/pipelines.md's `helm install` commands render valid manifests: the examples' own, or with the Secret
    of escalation headers its `kubectl create secret` makes."""
    doc = ROOT / "docs" / "pipelines.md"
    installs = [c for c in kv.doc_commands(doc) if c[:2] == ["helm", "install"]]
    assert {c[2] for c in installs} == {"camera-loop", "two-tier-gateway", "two-tier-edge"}
    for install in installs:
        flags = install[install.index("charts/edge-model") + 1 :]
        (sdep,) = [
            d for d in yaml.safe_load_all(kv.helm("template", install[2], "charts/edge-model", *flags).stdout) if d
        ]
        assert kv.manifest_errors(sdep) == []
        example = kv.render_example(ROOT / flags[flags.index("-f") + 1])
        if "--set" not in flags:
            assert kv.plain(sdep) == example
        else:
            spec = sdep["spec"]["predictors"][0]["componentSpecs"][0]["spec"]
            (volume,) = [v for v in spec["volumes"] if v["name"] == "escalate-headers"]
            (create,) = [c for c in kv.doc_commands(doc) if c[:4] == ["kubectl", "create", "secret", "generic"]]
            secret = yaml.safe_load(kv.run_tool("kubectl", *create[1:], "--dry-run=client", "-o", "yaml").stdout)
            assert secret["metadata"]["name"] == volume["secret"]["secretName"] and "headers" in secret["data"]
