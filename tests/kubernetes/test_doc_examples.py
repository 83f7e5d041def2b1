"""The examples of README.md and docs/*.md marked `<!-- cluster -->`: what a cluster would run, rendered with the real
helm and validated against the CRDs' and Kubernetes' schemas (tests/support/doc_examples.py,
`validate_cluster_block`). tests/e2e/test_doc_examples.py runs the others."""

from __future__ import annotations

import pytest

from tests.support.doc_examples import Block, every_block, validate_cluster_block

RENDERED = [block for block in every_block() if block.how == "rendered"]


@pytest.mark.parametrize("block", RENDERED, ids=[block.id for block in RENDERED])
def test_cluster_example_renders_and_validates(block: Block, tmp_path):
    result = validate_cluster_block(block, tmp_path)
    assert result.errors == [], f"{block.id}:\n" + "\n".join(result.errors)
    assert result.done or result.shown, f"{block.id}: nothing in it"
