"""The chart puts the uncertain spool on a hostPath given to the pod's user, or on an emptyDir, and refuses a
spool it cannot give."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support import k8s_validation as kv

# --- the chart: the spool on a volume ----------------------------------------------------------------------

SPOOLING: dict[str, Any] = {
    "modelUri": "s3://m/x.tar.gz",
    "parameters": {"uncertain_store": "s3://r/u/", "confidence_threshold": 0.5},
}


def chart(**values: object) -> tuple[dict, dict, dict]:
    """Rendered with `values` (the manifest validates): the graph's parameters, the server container, the pod."""
    sdep = kv.render_one(set_values={**SPOOLING, **values})
    assert kv.manifest_errors(sdep) == []
    predictor = sdep["spec"]["predictors"][0]
    (spec,) = [c["spec"] for c in predictor["componentSpecs"]]
    (server,) = spec["containers"]
    return {p["name"]: p["value"] for p in predictor["graph"]["parameters"]}, server, spec


def named(items: list[dict], name: str) -> dict:
    (item,) = [i for i in items if i["name"] == name]
    return item


def test_the_chart_puts_the_spool_on_a_hostpath_given_to_the_pods_user_or_on_an_emptydir():
    params, server, spec = chart(uncertainSpool={"enabled": True, "hostPath": "/var/lib/edgeservers/uncertain"})
    assert params["uncertain_spool_dir"] == "/var/spool/edgeservers"
    assert named(server["volumeMounts"], "uncertain-spool")["mountPath"] == "/var/spool/edgeservers"
    assert named(spec["volumes"], "uncertain-spool")["hostPath"] == {
        "path": "/var/lib/edgeservers/uncertain",
        "type": "DirectoryOrCreate",
    }
    owner = named(spec["initContainers"], "model-spool-owner")
    assert owner["args"] == ["--cache-dir", "/var/spool/edgeservers", "--prepare-cache", "1000:1000"]
    assert owner["securityContext"]["capabilities"] == {"drop": ["ALL"], "add": ["CHOWN"]}

    params, server, spec = chart(uncertainSpool={"enabled": True, "sizeLimit": "1Gi"})
    assert named(spec["volumes"], "uncertain-spool") == {"name": "uncertain-spool", "emptyDir": {"sizeLimit": "1Gi"}}
    assert params["uncertain_spool_dir"] == "/var/spool/edgeservers"
    assert not [c for c in spec["initContainers"] if c["name"].endswith("spool-owner")]

    params, server, spec = chart()
    assert "uncertain_spool_dir" not in params and "uncertain-spool" not in {v["name"] for v in spec["volumes"]}


@pytest.mark.parametrize(
    "values, message",
    [
        (
            {"uncertainSpool": {"enabled": True}, "parameters": {}},
            "uncertainSpool.enabled needs parameters.uncertain_store",
        ),
        (
            {
                "uncertainSpool": {"enabled": True},
                "parameters": {**SPOOLING["parameters"], "uncertain_spool_dir": "/x"},
            },
            "set uncertainSpool.enabled (the chart mounts the spool's volume and names it) or parameters.uncertain_spool_dir",
        ),
        (
            {"uncertainSpool": {"enabled": True, "hostPath": "relative"}},
            "/uncertainSpool/hostPath': 'relative' does not match",
        ),
    ],
)
def test_the_chart_refuses_a_spool_it_cannot_give(values, message):
    result = kv.helm("template", "edge", str(kv.CHART), *kv.value_args(set_values={**SPOOLING, **values}), check=False)
    assert result.returncode != 0 and message in result.stderr, result.stderr
