"""The metrics as users see them: a scrape parsed into series, docs/metrics.md's tables, and the Grafana
dashboard's queries with the series they use."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from tests.support.paths import ROOT

METRICS_DOC = ROOT / "docs" / "metrics.md"
DASHBOARD = ROOT / "charts" / "dashboards" / "edgeservers.json"
# What Seldon puts on every series (docs/metrics.md, "Labels on every series").
SELDON_LABELS = frozenset(
    {
        "deployment_name",
        "seldon_deployment_name",
        "predictor_name",
        "predictor_version",
        "model_name",
        "model_image",
        "image_name",
        "model_version",
        "image_version",
        "worker_id",
        "method",
    }
)
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


@dataclass(frozen=True)
class Documented:
    """One row of docs/metrics.md's tables of series."""

    name: str
    type: str
    labels: frozenset[str]

    @property
    def series(self) -> set[str]:
        """The names a scrape carries for it (a histogram's three)."""
        if self.type == "histogram":
            return {self.name + suffix for suffix in HISTOGRAM_SUFFIXES}
        return {self.name}


def documented() -> dict[str, Documented]:
    """docs/metrics.md's rows `| `name` | type | labels | meaning |`, by name."""
    rows = {}
    for line in METRICS_DOC.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[1] in ("counter", "gauge", "histogram") and cells[0].startswith("`"):
            name = cells[0].strip("`")
            labels = frozenset(label.strip().strip("`") for label in cells[2].split(",") if label.strip())
            rows[name] = Documented(name, cells[1], labels)
    return rows


@dataclass(frozen=True)
class Family:
    """One metric family of a scrape: its type and every sample's name and labels."""

    name: str
    type: str
    samples: tuple[tuple[str, dict[str, str], float], ...]

    @property
    def series(self) -> set[str]:
        return {name for name, _, _ in self.samples}


def families(exposition: str) -> dict[str, Family]:
    """A Prometheus text exposition, by family name."""
    return {
        f.name: Family(f.name, f.type, tuple((s.name, dict(s.labels), s.value) for s in f.samples))
        for f in text_string_to_metric_families(exposition)
    }


def total(exposition: str, series: str, **labels: str) -> float:
    """The sum of a series' samples over every label set that includes `labels` (0 when absent)."""
    return sum(
        value
        for family in families(exposition).values()
        for name, have, value in family.samples
        if name == series and labels.items() <= have.items()
    )


# --- the dashboard -----------------------------------------------------------------------------------------


def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def panels(board: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, those inside rows included."""
    for panel in board["panels"]:
        yield panel
        yield from panel.get("panels", ())


def queries(board: dict[str, Any]) -> list[str]:
    """Every PromQL text of the dashboard: the panels' targets and the query variables."""
    found = [t["expr"] for p in panels(board) for t in p.get("targets", ())]
    return found + [v["query"] for v in board["templating"]["list"] if v["type"] == "query"]


_SELECTOR = re.compile(r"([A-Za-z_:][A-Za-z0-9_:]*)\s*\{")
_LABEL_VALUES = re.compile(r"label_values\(\s*([A-Za-z_:][A-Za-z0-9_:]*)\s*[,)]")


def series_used(query: str) -> set[str]:
    """The series a query selects: every selector carries label matchers in this dashboard (a test checks),
    so each is a name followed by `{`; label_values(name, label) names one too."""
    return set(_SELECTOR.findall(query)) | set(_LABEL_VALUES.findall(query))
