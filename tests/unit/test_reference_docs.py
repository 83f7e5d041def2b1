"""The reference docs written from the code (edgeservers/reference_docs.py): docs/parameters.md from Settings and
docs/architecture.md's table of the adapter's patches are what the code gives today."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import fields

import pytest

from edgeservers import reference_docs
from edgeservers.settings import Settings, seldon_types


def test_the_committed_reference_docs_are_what_the_code_writes():
    """Checked by the command itself, in a fresh interpreter: the adapter's registry fills as modules load and
    patches apply, so a test process that has already served holds more than a fresh start would write."""
    check = subprocess.run(
        [sys.executable, "-m", "edgeservers.reference_docs", "--check"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=reference_docs.ROOT,
    )
    assert check.returncode == 0, check.stderr


def test_every_parameter_has_a_row_with_its_type_and_default():
    text = reference_docs.parameters_markdown()
    types = seldon_types()
    rows = {
        line.split(" | ")[0].strip("| `"): line.split(" | ") for line in text.splitlines() if line.startswith("| `")
    }
    assert set(rows) == {f.name for f in fields(Settings)}
    for name, cells in rows.items():
        assert cells[1] == types[name], name
    assert rows["top_k"][2] == "5" and rows["return_mask"][2] == "`false`" and rows["model_uri"][2] == "required"


def test_a_field_without_its_doc_stops_the_generator(monkeypatch):
    bare = {**Settings.__dataclass_fields__["top_k"].metadata}
    del bare["doc"]
    monkeypatch.setattr(Settings.__dataclass_fields__["top_k"], "metadata", bare)
    with pytest.raises(ValueError, match="Settings.top_k: give it a section"):
        reference_docs.parameters_markdown()


def test_the_adapter_table_lists_every_patch_and_reliance():
    from edgeservers.seldon import patches

    table = reference_docs.adapter_table()
    for target, reliance in patches.REGISTRY.items():
        assert f"| `{target}` | {'yes' if reliance.patched else ''} |" in table
