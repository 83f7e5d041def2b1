"""docs/metrics.md lists every series the code defines, named in Prometheus' base units; tests/e2e/test_metrics.py
checks the same tables against what a running server exports."""

from __future__ import annotations

import ast
import re

from tests.support.paths import ROOT
from tests.support.prometheus import documented

_METRIC = re.compile(r"edgeservers_[a-z0-9_]+")


def defined_in_code() -> set[str]:
    """Every `edgeservers_*` string constant of the package: each metric key is one (metrics.py, data_loop/)."""
    found = set()
    for path in (ROOT / "edgeservers").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and _METRIC.fullmatch(node.value):
                found.add(node.value)
    return found


def test_every_metric_of_the_code_has_its_row_and_every_row_its_metric():
    rows = documented()
    ours = {name for name in rows if name.startswith("edgeservers_")}
    code = defined_in_code()
    assert code >= {"edgeservers_inference_seconds", "edgeservers_uncertain_predictions_total"}
    assert code - ours == set(), "metrics missing from docs/metrics.md"
    assert ours - code == set(), "docs/metrics.md lists metrics the code no longer has"


def test_names_say_the_type_and_the_unit():
    for row in documented().values():
        expected = (
            "histogram" if row.name.endswith("_seconds") else "counter" if row.name.endswith("_total") else "gauge"
        )
        assert row.type == expected, row
        assert row.type != "gauge" or row.name.endswith("_info"), row
        assert not re.search(r"_(ms|milliseconds)(_|$)", row.name), row


def test_the_pod_monitor_scrapes_the_port_and_path_the_operator_sets():
    """docs/metrics.md's PodMonitor: the container port the chart names `metrics`, the path the Seldon operator
    sets (as tests/support/pods.py models it), the pod label the chart's NetworkPolicy selects on too."""
    import yaml

    from tests.support.pods import PROMETHEUS_PATH

    text = (ROOT / "docs" / "metrics.md").read_text()
    (block,) = [b.split("```", 1)[0] for b in text.split("```yaml\n")[1:] if "kind: PodMonitor" in b]
    monitor = yaml.safe_load(block)
    assert monitor["spec"]["podMetricsEndpoints"] == [{"port": "metrics", "path": PROMETHEUS_PATH}]
    (label,) = monitor["spec"]["selector"]["matchExpressions"]
    assert label == {"key": "seldon-deployment-id", "operator": "Exists"}
    charts = ROOT / "charts" / "edge-model" / "templates"
    assert "- name: metrics" in (charts / "seldondeployment.yaml").read_text()
    assert "seldon-deployment-id:" in (charts / "networkpolicy.yaml").read_text()
