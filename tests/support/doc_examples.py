"""The examples of README.md and docs/*.md, read from the Markdown so the docs cannot drift from what runs.

Every fenced block is one of (docs/development.md, "Examples in the docs", is the convention writers follow):

- **run**: a ```sh / ```bash / ```console or ```python block with no marker. Run from the repository root
  as a newcomer would (sh with bash -eo pipefail; python with .venv/bin/python, or .venv-client/bin/python when
  it imports tritonclient). A block that calls 127.0.0.1:9000 (REST), :5000 (gRPC) or :6000 (metrics) runs
  against `make serve`, started by the test on free ports (the block's addresses rewritten to them); a
  `make serve ...` line in the block, or a `<!-- serve: DEMO_MODEL=... PARAMS='...' -->` marker, says which.
  Paths under /tmp/ go to a directory of the test's own. Output: a block whose lines start with `$ ` is a
  transcript (each command's output follows it); otherwise a ```text / ```json / ```output block right after
  it (blank lines between at most) is its output. Both are compared by `differences` (values and structure;
  timings masked).
- **rendered**: after `<!-- cluster -->`: needs a cluster. Its helm commands are rendered with the real helm,
  the files it applies and the Secrets it creates are validated against the CRDs' and Kubernetes' schemas
  (`validate_cluster_block`); a ```yaml block is a manifest or edge-model values, validated the same way.
- **shown**: after `<!-- not run: <reason> -->` (a build, a benchmark, a device); any other language (text,
  json, yaml without a marker, plain ```) is data, not an example.

`python -m tests.support.doc_examples` lists every block and what the tests do with it.
"""

from __future__ import annotations

import json
import math
import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tests.support import k8s_validation as kv
from tests.support.paths import ROOT

DOCS = (ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")))
SHELL = ("sh", "bash", "shell", "console")
RUNNABLE = (*SHELL, "python")
OUTPUT = ("text", "json", "output")
MARKER = re.compile(r"^\s*<!--\s*(not run|cluster|serve)\s*(?::\s*(.*?))?\s*-->\s*$")
FENCE = re.compile(r"^(\s*)```(\S*)\s*$")
PORTS = {"rest": 9000, "grpc": 5000, "metrics": 6000}  # make serve's defaults, as the docs write them
SERVE_LINE = re.compile(r"^\s*(?:\$\s+)?make serve\b(.*)$")
# Values that differ from run to run, masked wherever they appear in JSON output: the request timings Seldon hands
# over (how many depends on metrics_interval), times and dates.
MASKED_KEYS = frozenset({"metrics", "time", "model_fetched_at"})
ANY = "..."  # a shown JSON value "..." (or "..." inside a text line) matches anything


@dataclass(frozen=True)
class Block:
    doc: Path
    line: int  # of the opening fence, 1-based
    lang: str
    code: str
    marker: str = ""  # "not run", "cluster", "serve" or ""
    note: str = ""  # the marker's text after the colon
    output: str | None = None  # the output block that follows a runnable one
    serve: tuple[str, ...] = ()  # make serve's variables from a `serve` marker

    @property
    def id(self) -> str:
        return f"{self.doc.relative_to(ROOT)}:{self.line}"

    @property
    def how(self) -> str:
        """run, rendered or shown (see the module's docstring)."""
        if self.marker == "not run" or self.lang not in RUNNABLE and self.marker != "cluster":
            return "shown"
        if self.marker == "cluster":
            return "rendered"
        return "run"

    @property
    def transcript(self) -> bool:
        return self.lang in SHELL and any(line.startswith("$ ") for line in self.code.splitlines())

    def server(self) -> tuple[str, ...] | None:
        """make serve's variables for the server this block calls (() for the defaults), None if it calls none."""
        declared = [
            shlex.split(m.group(1), comments=True) for line in self.code.splitlines() if (m := SERVE_LINE.match(line))
        ]
        if declared:
            return tuple(declared[0])
        if self.serve:
            return self.serve
        if re.search(rf"(127\.0\.0\.1|localhost):({'|'.join(map(str, PORTS.values()))})\b", self.code):
            return ()
        return None


def blocks(doc: Path) -> list[Block]:
    """Every fenced block of one Markdown file, with its marker and the output block that follows it."""
    lines = doc.read_text().splitlines()
    found: list[Block] = []
    i = 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        indent, lang = opening.groups()
        end = next(j for j in range(i + 1, len(lines)) if lines[j].strip() == "```")
        code = "\n".join(line[len(indent) :] if line.startswith(indent) else line for line in lines[i + 1 : end])
        marker = MARKER.match(lines[i - 1]) if i else None
        kind, note = (marker.group(1), marker.group(2) or "") if marker else ("", "")
        block = Block(
            doc, i + 1, lang, code + "\n", kind, note, serve=tuple(shlex.split(note)) if kind == "serve" else ()
        )
        if found and lang in OUTPUT and not kind and _follows(lines, found[-1], i):
            found[-1] = Block(**{**found[-1].__dict__, "output": code + "\n"})
        else:
            found.append(block)
        i = end + 1
    return found


def _follows(lines: list[str], previous: Block, start: int) -> bool:
    """Whether the fence at `start` comes right after `previous`'s closing fence (blank lines between at most)."""
    if previous.lang not in RUNNABLE or previous.output is not None or previous.how != "run":
        return False
    closing = previous.line + previous.code.count("\n")  # 0-based index of previous's closing fence
    return all(not line.strip() for line in lines[closing + 1 : start])


def every_block() -> list[Block]:
    return [b for doc in DOCS for b in blocks(doc)]


# --- running -------------------------------------------------------------------------------------------------


@dataclass
class Step:
    """One command of a block (the whole block unless it is a transcript) and the output shown for it."""

    code: str
    shown: str | None


def steps(block: Block) -> list[Step]:
    """The block's commands without its `make serve` line (the test starts that server), each with its output."""
    if not block.transcript:
        code = "\n".join(line for line in block.code.splitlines() if not SERVE_LINE.match(line))
        return [Step(code + "\n", block.output)]
    result: list[Step] = []
    command: list[str] = []  # the lines of a command continued with a backslash
    for line in block.code.splitlines():
        if command or line.startswith("$ "):
            command.append(line.removeprefix("$ ") if not command else line)
            if not line.endswith("\\"):
                result.append(Step("\n".join(command) + "\n", None))
                command = []
        elif result:
            result[-1].shown = (result[-1].shown or "") + line + "\n"
    return [s for s in result if not SERVE_LINE.match(s.code)]


def localized(code: str, ports: dict[str, int], tmp: Path) -> str:
    """The code with make serve's ports replaced by the test server's and /tmp/ by the test's own directory."""
    for name, default in PORTS.items():
        code = re.sub(rf"(127\.0\.0\.1|localhost):{default}\b", rf"\g<1>:{ports[name]}", code)
    return re.sub(r"(?<![\w.])/tmp/", f"{tmp}/", code)


def interpreter(block: Block) -> list[str]:
    if block.lang in SHELL:
        return ["bash", "-eo", "pipefail", "-c"]
    venv = ".venv-client" if re.search(r"^\s*(import|from)\s+tritonclient", block.code, re.M) else ".venv"
    return [str(ROOT / venv / "bin" / "python"), "-c"]


# --- comparing -------------------------------------------------------------------------------------------------


def differences(shown: str, actual: str) -> list[str]:
    """How `actual` output differs from the `shown` one, [] when it matches. JSON (a document, or one per line) is
    compared by structure and value: keys in the server's order, numbers within 0.1%, MASKED_KEYS and "..." values
    not compared; other text line by line, "..." in a shown line matching any text."""
    shown_json, actual_json = _json_values(shown), _json_values(actual)
    if shown_json is not None:
        if actual_json is None:
            return [f"expected JSON, got {actual[:500]!r}"]
        if len(shown_json) != len(actual_json):
            return [f"{len(shown_json)} JSON documents shown, {len(actual_json)} printed: {actual[:500]!r}"]
        return [d for s, a in zip(shown_json, actual_json, strict=True) for d in _json_differences(s, a, "")]
    shown_lines, actual_lines = shown.rstrip("\n").splitlines(), actual.rstrip("\n").splitlines()
    if len(shown_lines) != len(actual_lines):
        return [f"{len(shown_lines)} lines shown, {len(actual_lines)} printed:\n{actual}"]
    found = []
    for expected, got in zip(shown_lines, actual_lines, strict=True):
        pattern = ".*".join(re.escape(part) for part in expected.rstrip().split(ANY))
        if not re.fullmatch(pattern, got.rstrip()):
            found.append(f"shown {expected!r}, printed {got!r}")
    return found


def _json_values(text: str) -> list[Any] | None:
    """The JSON documents of `text`, one after another (on lines of their own, or run together as two curls print
    them), objects as lists of (key, value) pairs to keep their order; None if it is not all JSON."""
    decoder = json.JSONDecoder(object_pairs_hook=lambda pairs: pairs)
    values, at, text = [], 0, text.strip()
    while at < len(text):
        try:
            value, at = decoder.raw_decode(text, at)
        except ValueError:
            return None
        values.append(value)
        while at < len(text) and text[at].isspace():
            at += 1
    return values or None


def _json_differences(shown: Any, actual: Any, where: str) -> list[str]:
    if shown == ANY:
        return []
    if isinstance(shown, list) and shown and all(isinstance(p, tuple) for p in shown):  # an object, as pairs
        if not (isinstance(actual, list) and all(isinstance(p, tuple) for p in actual)):
            return [f"{where or '(root)'}: an object shown, {actual!r} printed"]
        keys, got = [k for k, _ in shown], [k for k, _ in actual]
        if keys != got:
            return [f"{where or '(root)'}: keys {keys} shown, {got} printed (in this order)"]
        found = []
        for (key, value), (_, other) in zip(shown, actual, strict=True):
            if key not in MASKED_KEYS:
                found += _json_differences(value, other, f"{where}.{key}")
        return found
    if isinstance(shown, list):
        if not isinstance(actual, list) or len(actual) != len(shown):
            return [f"{where or '(root)'}: {len(shown)} items shown, printed {actual!r:.300}"]
        return [
            d
            for i, (s, a) in enumerate(zip(shown, actual, strict=True))
            for d in _json_differences(s, a, f"{where}[{i}]")
        ]
    if isinstance(shown, bool) or not isinstance(shown, (int, float)):
        return (
            [] if shown == actual and type(shown) is type(actual) else [f"{where}: {shown!r} shown, {actual!r} printed"]
        )
    if isinstance(actual, bool) or not isinstance(actual, (int, float)):
        return [f"{where}: {shown!r} shown, {actual!r} printed"]
    return (
        [] if math.isclose(shown, actual, rel_tol=1e-3, abs_tol=1e-6) else [f"{where}: {shown} shown, {actual} printed"]
    )


# --- the cluster blocks ----------------------------------------------------------------------------------------


@dataclass
class Rendered:
    """What validate_cluster_block did with each command or document of a block."""

    done: list[str] = field(default_factory=list)  # "helm template charts/edge-model -f ...: 1 SeldonDeployment"
    shown: list[str] = field(default_factory=list)  # commands that only a cluster can run (port-forward, curl, ...)
    errors: list[str] = field(default_factory=list)


def commands(code: str) -> Iterator[list[str]]:
    """A shell block's commands as argument lists (continuations joined, comments and `$ ` prompts dropped)."""
    for line in re.sub(r"\\\n\s*", " ", code).splitlines():
        line = line.strip().removeprefix("$ ")
        if line and not line.startswith("#"):
            yield shlex.split(line, comments=True)


def validate_cluster_block(block: Block, tmp: Path) -> Rendered:
    """A `<!-- cluster -->` block, as far as it can be checked without a cluster: helm commands rendered with the
    real helm (a chart of this repository: every document validated; a chart from a repository: its values and
    flags parsed by helm, its version pinned), `kubectl apply -f` files and `kubectl create` objects validated
    against their schemas, a YAML block validated as a manifest or as edge-model values."""
    result = Rendered()
    if block.lang == "yaml":
        doc = yaml.safe_load(block.code)
        if isinstance(doc, dict) and "kind" in doc:
            _validate(doc, "the YAML", result)
        else:
            values = tmp / "values.yaml"
            values.write_text(block.code)
            _render_chart(["helm", "template", "doc", "charts/edge-model"], result, tmp, values)
        return result
    for argv in commands(block.code):
        match argv[:2]:
            case ["helm", "install" | "upgrade" | "template"]:
                _render_chart(argv, result, tmp)
            case ["kubectl", "apply"]:
                files = [argv[i + 1] for i, a in enumerate(argv) if a in ("-f", "--filename")]
                for name in files:
                    for doc in yaml.safe_load_all((ROOT / name).read_text()):
                        if doc:
                            _validate(doc, name, result)
            case ["kubectl", "create"]:
                made = kv.run_tool("kubectl", *argv[1:], "--dry-run=client", "-o", "yaml", check=False)
                if made.returncode:
                    result.errors.append(f"{shlex.join(argv)}: {made.stderr.strip()}")
                else:
                    _validate(yaml.safe_load(made.stdout), shlex.join(argv[:4]), result)
            case _:
                result.shown.append(shlex.join(argv))
                missing = [a for a in argv if a.startswith("@") and not (ROOT / a[1:]).exists()]
                result.errors += [f"{shlex.join(argv)}: no file {a[1:]} in the repository" for a in missing]
    return result


def _validate(doc: dict, source: str, result: Rendered) -> None:
    errors = kv.document_errors(doc)
    what = f"{doc.get('kind')} {doc.get('metadata', {}).get('name', '')}".strip()
    if errors is None:
        result.done.append(f"{source}: {what} parsed (no schema for {doc.get('apiVersion')} here)")
    else:
        result.done.append(f"{source}: {what} validated")
        result.errors += [f"{source}: {what}: {e}" for e in errors]


VALUE_FLAGS = ("-f", "--values", "--set", "--set-string", "--set-json", "--set-file")
ARGUMENT_FLAGS = (*VALUE_FLAGS, "-n", "--namespace", "--version")


def _render_chart(argv: list[str], result: Rendered, tmp: Path, values_file: Path | None = None) -> None:
    """`helm install|upgrade|template <release> <chart> ...` as `helm template`: this repository's chart rendered and
    every document validated (with `values_file`: those values alone, on a placeholder modelUri); a repository's
    chart pinned with --version, its values flags given to helm."""
    positional: list[str] = []
    values: list[str] = []
    given: dict[str, str] = {}
    i = 2
    while i < len(argv):
        if argv[i] in ARGUMENT_FLAGS:
            if argv[i] in VALUE_FLAGS:
                values += argv[i : i + 2]
            given[argv[i].lstrip("-")[:1] if argv[i] == "--namespace" else argv[i].lstrip("-")] = argv[i + 1]
            i += 2
        else:
            if not argv[i].startswith("-"):  # --reuse-values, --install, --wait, ...: nothing to render
                positional.append(argv[i])
            i += 1
    release, chart = positional[:2]
    command = shlex.join(argv)
    if not (ROOT / chart).is_dir():
        if "version" not in given:
            result.errors.append(f"{command}: pin the chart's version (--version)")
        echo = tmp / "echo-chart"
        (echo / "templates").mkdir(parents=True, exist_ok=True)
        (echo / "Chart.yaml").write_text("apiVersion: v2\nname: echo\nversion: 0.0.1\n")
        (echo / "templates" / "values.yaml").write_text("{{ toYaml .Values }}\n")
        shown = kv.helm("template", release, str(echo), *values, check=False)
        if shown.returncode:
            result.errors.append(f"{command}: helm refuses its values: {shown.stderr.strip()}")
        result.done.append(f"{chart} {given.get('version', '(no version)')}: values and flags parsed by helm")
        return
    if values_file is not None:
        values = ["-f", str(values_file), "--set-string", "modelUri=x"]
    out = kv.helm("template", release, chart, "--namespace", given.get("n", "default"), *values, check=False)
    if out.returncode:
        result.errors.append(f"{command}: {out.stderr.strip()}")
        return
    for doc in yaml.safe_load_all(out.stdout):
        if doc:
            _validate(doc, f"helm template {release} {chart}", result)


def main() -> None:
    """List every block and what the tests do with it."""
    for block in every_block():
        if block.lang not in RUNNABLE and block.marker != "cluster":
            continue  # data
        what = block.how
        if what == "run":
            server = block.server()
            what += " (make serve" + (" " + " ".join(server) if server else "") + ")" if server is not None else ""
        elif block.note:
            what += f" ({block.note})"
        print(f"{block.id:32} {block.lang:8} {what}")


if __name__ == "__main__":
    main()
