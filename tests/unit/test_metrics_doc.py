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
