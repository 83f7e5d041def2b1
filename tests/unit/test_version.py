"""One version: edgeservers/__init__.py. The Makefile and pyproject.toml read it; the files that cannot
read it (the chart, the operator values, the Dockerfiles' build-arg defaults, the examples) must agree."""

from __future__ import annotations

import re
import subprocess

import yaml

import edgeservers
from tests.support.paths import ROOT

VERSION = edgeservers.__version__
# Our images' references: <registry>/edgeservers[-storage-initializer]:<tag>
IMAGE_TAG = re.compile(r"edgeservers(?:-storage-initializer)?:([0-9][\w.+-]*)")


def test_the_chart_is_versioned_with_the_package():
    chart = yaml.safe_load((ROOT / "charts/edge-model/Chart.yaml").read_text())
    assert chart["version"] == chart["appVersion"] == VERSION


def test_every_image_reference_in_charts_and_dockerfiles_uses_the_package_version():
    files = [
        *ROOT.glob("charts/**/*.yaml"),
        *ROOT.glob("Dockerfile*"),
        *ROOT.glob("docker/*Dockerfile*"),
        *ROOT.glob("storage-initializer/Dockerfile*"),
    ]
    found = {}
    for path in files:
        text = path.read_text()
        for tag in IMAGE_TAG.findall(text):
            found[f"{path.relative_to(ROOT)}: {tag}"] = tag.removesuffix("-openvino").split("-")[0]
        for default in re.findall(r"^ARG VERSION=(\S+)", text, flags=re.M):
            found[f"{path.relative_to(ROOT)}: ARG VERSION={default}"] = default
    operator = yaml.safe_load((ROOT / "charts/operator-values.yaml").read_text())
    for name, server in operator["predictor_servers"].items():
        tag = server["protocols"]["seldon"]["defaultImageVersion"]
        found[f"operator-values {name}: {tag}"] = tag.removesuffix("-openvino")
    assert found, "no versioned image reference found"
    assert {where: v for where, v in found.items() if v != VERSION} == {}


def test_pyproject_reads_the_version_from_the_package():
    assert 'version = { attr = "edgeservers.__version__" }' in (ROOT / "pyproject.toml").read_text()


def test_every_image_reference_in_charts_names_the_registry_and_images_of_mk_images():
    """mk/images.mk's IMAGE_REGISTRY, SERVER_IMAGE and INITIALIZER_IMAGE are the one place: `make image-refs` wrote
    them into the chart's values and examples, the operator values and the KServe manifests."""
    result = subprocess.run(
        ["make", "-s", "--no-print-directory", "image-refs", "IMAGE_REFS_ARGS=--check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
