"""charts/dashboards/edgeservers.json has what Grafana needs to import it: panels laid out on its 24-column
grid, targets with PromQL, the data source as a template variable. tests/e2e/test_metrics.py checks that the
series its queries use are the ones a running server exports."""

from __future__ import annotations

import re

from tests.support.prometheus import dashboard, panels, queries, series_used

DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
_FILTERED = re.compile(r'deployment_name=~"\$deployment",\s*model_name=~"\$model"')


def test_it_is_a_dashboard_grafana_can_import():
    board = dashboard()
    assert board["title"] and board["uid"] == "edgeservers" and isinstance(board["schemaVersion"], int)
    assert "id" not in board or board["id"] is None  # an id would overwrite whatever dashboard has it
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    for variable in variables.values():
        if variable["type"] == "query":
            assert variable["datasource"] == DATASOURCE, variable["name"]
            assert variable["query"].startswith("label_values(") and variable["definition"] == variable["query"]
    ids = [p["id"] for p in panels(board)]
    assert len(ids) == len(set(ids)), "panel ids are unique"


def test_panels_fit_the_grid_without_overlapping() -> None:
    cells: dict[tuple[int, int], str] = {}
    for panel in panels(dashboard()):
        pos = panel["gridPos"]
        assert {"x", "y", "w", "h"} <= pos.keys() and pos["w"] > 0 and pos["h"] > 0, panel["title"]
        assert pos["x"] + pos["w"] <= 24, panel["title"]
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps {cells.get((x, y))}"
                cells[x, y] = panel["title"]


def test_every_panel_queries_the_chosen_data_source_for_the_chosen_models():
    graphs = [p for p in panels(dashboard()) if p["type"] != "row"]
    assert {p["type"] for p in graphs} <= {"timeseries", "stat", "table"}
    for panel in graphs:
        assert panel["datasource"] == DATASOURCE and panel["targets"] and panel["description"], panel["title"]
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs)), panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE, panel["title"]
            expr = target["expr"]
            assert expr.count("(") == expr.count(")") and expr.count("{") == expr.count("}"), expr
            assert not bare_names(expr), f"{panel['title']}: every series selected with label matchers: {expr}"
            for series in series_used(expr) - {"up"}:
                # each edgeservers series filtered by the dashboard's variables
                assert re.search(re.escape(series) + r"\{" + _FILTERED.pattern, expr), (series, expr)


def test_it_uses_the_seconds_histograms_and_the_counters():
    used = set().union(*map(series_used, queries(dashboard())))
    assert {
        "edgeservers_inference_seconds_bucket",
        "edgeservers_inference_seconds_count",
        "edgeservers_uncertain_predictions_total",
        "edgeservers_escalations_total",
        "edgeservers_delegate_info",
        "up",
    } <= used
    assert not {s for s in used if s.endswith("_ms") or "_ms_" in s}


def bare_names(expr: str) -> list[str]:
    """Identifiers in a query that are neither a function, an aggregation's labels nor a selector with label
    matchers (a bare series name would escape the dashboard's variables and series_used)."""
    text = re.sub(r'"[^"]*"', '""', expr)
    text = re.sub(r"\{[^}]*\}", "{}", text)
    text = re.sub(r"\[[^\]]*\]", "", text)
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)
    return [m.group(1) for m in re.finditer(r"([A-Za-z_:][A-Za-z0-9_:]*)(?!\s*[({\w])", text)]
