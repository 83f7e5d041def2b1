"""The docs as the tests read them (tests/support/doc_examples.py): the convention for examples (docs/development.md,
"Examples in the docs"), how a shown output is compared, every block accounted for, and every link of README.md
and docs/*.md pointing at a file and heading that exist. tests/e2e/test_doc_examples.py runs the examples,
tests/kubernetes/test_doc_examples.py renders the cluster ones."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.support.doc_examples import DOCS, RUNNABLE, blocks, differences, every_block, localized, steps
from tests.support.paths import ROOT

SAMPLE = """\
# A doc

```sh
curl -s http://127.0.0.1:9000/api/v1.0/predictions
```

```json
{"a": 1}
```

<!-- not run: takes an hour -->
```sh
make bench
```

<!-- cluster -->
```sh
helm install x charts/edge-model
```

- a list item:

  ```sh
  $ make serve DEMO_MODEL=models/face_mask POSTPROCESS=detection
  $ curl -s http://localhost:9000/v2 \\
      -H 'Accept: application/json'
  {"name": "x"}
  $ echo done
  done
  ```

<!-- serve: PARAMS='top_k=2 confidence_threshold=0.9' -->
```python
print(open("/tmp/x").read())
```
```text
hello
```

```yaml
data: only
```
"""


def test_the_convention_as_the_tests_read_it(tmp_path):
    doc = tmp_path / "doc.md"
    doc.write_text(SAMPLE)
    found = blocks(doc)
    assert [(b.lang, b.how) for b in found] == [
        ("sh", "run"),
        ("sh", "shown"),
        ("sh", "rendered"),
        ("sh", "run"),
        ("python", "run"),
        ("yaml", "shown"),
    ]
    curl, bench, _, transcript, python, _ = found
    assert curl.output == '{"a": 1}\n' and curl.server() == ()
    assert bench.note == "takes an hour" and bench.server() is None
    assert transcript.server() == ("DEMO_MODEL=models/face_mask", "POSTPROCESS=detection")
    assert [(s.code, s.shown) for s in steps(transcript)] == [
        ("curl -s http://localhost:9000/v2 \\\n    -H 'Accept: application/json'\n", '{"name": "x"}\n'),
        ("echo done\n", "done\n"),
    ]
    assert python.server() == ("PARAMS=top_k=2 confidence_threshold=0.9",) and python.output == "hello\n"
    assert localized(transcript.code, {"rest": 1, "grpc": 2, "metrics": 3}, tmp_path).count("localhost:1/v2") == 1
    assert (
        localized(python.code, {"rest": 1, "grpc": 2, "metrics": 3}, tmp_path)
        == f'print(open("{tmp_path}/x").read())\n'
    )


@pytest.mark.parametrize(
    "shown, printed, expected",
    [
        ('{"a": 1, "b": [0.5]}', '{"a":1,"b":[0.50001]}', []),  # values within 0.1 %
        ('{"a": 1, "b": 2}', '{"b":2,"a":1}', ["keys ['a', 'b'] shown, ['b', 'a'] printed"]),  # the server's order
        ('{"a": 0.5}', '{"a":0.6}', ["0.5 shown, 0.6 printed"]),
        ('{"a": 1}', '{"a":true}', ["1 shown, True printed"]),
        ('{"meta": {"metrics": []}}', '{"meta":{"metrics":[{"key":"x","value":3.2}]}}', []),  # timings masked
        ('{"a": "..."}', '{"a":{"any":"thing"}}', []),
        ('{"a": 1}\n{"b": 2}', '{"a":1}{"b":2}', []),  # two curls print their JSON run together
        ('{"a": 1}', "not json", ["expected JSON"]),
        ("0.996094:89:macaw\n", "0.996094:89:macaw\n", []),
        ("took ... s\n", "took 0.12 s\n", []),
        ("a\nb\n", "a\n", ["2 lines shown, 1 printed"]),
    ],
)
def test_differences_compare_values_and_structure(shown, printed, expected):
    found = differences(shown, printed)
    assert len(found) == len(expected) and all(e in f for e, f in zip(expected, found, strict=True)), found


def test_every_block_is_run_rendered_or_says_why_not():
    for block in every_block():
        if block.lang in RUNNABLE and block.how == "shown":
            assert block.note, f"{block.id}: <!-- not run: <reason> --> says why"


# --- links ---------------------------------------------------------------------------------------------------

LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def _anchors(doc: Path) -> set[str]:
    """GitHub's anchors of a Markdown file's headings: lower case, punctuation dropped, spaces as hyphens."""
    text = re.sub(r"```.*?```", "", doc.read_text(), flags=re.S)
    return {
        re.sub(r"[^\w\- ]", "", heading.strip().lower().replace("`", "")).replace(" ", "-")
        for heading in re.findall(r"^#+ (.*)$", text, re.M)
    }


@pytest.mark.parametrize("doc", DOCS, ids=[str(d.relative_to(ROOT)) for d in DOCS])
def test_every_link_names_a_file_and_heading_that_exist(doc):
    text = re.sub(r"```.*?```", "", doc.read_text(), flags=re.S)
    for target in LINK.findall(text):
        if re.match(r"[a-z]+:", target):
            continue  # https://, mailto:
        path, _, anchor = target.partition("#")
        linked = (doc.parent / path).resolve() if path else doc
        assert linked.exists(), f"{doc.relative_to(ROOT)}: {target} names no file"
        if anchor and linked.suffix == ".md":
            assert anchor in _anchors(linked), (
                f"{doc.relative_to(ROOT)}: {target}: no such heading in {path or doc.name}"
            )
