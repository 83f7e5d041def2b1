"""The audit's figures in docs/security.md, written from the audit itself so that they cannot drift: what it
finds in the server venv, in the amd64/arm64 images and in the armv7 image, and the images' runtime packages
the advisory snapshot does not cover (not checked, which is not "clean").

    .venv/bin/python -m security.summary --doc docs/security.md    # rewrite the doc's generated block
    .venv/bin/python -m security.summary                           # print it

The amd64/arm64 images install requirements.txt's closure from PyPI and then uninstall what
docker/trim-venv.sh removes; the closure is read from the installed distributions of the interpreter this
runs in, so run it with the server venv's python (installed from the same requirements), as `make audit`
does. tests/unit/test_audit.py checks the doc's block against it.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from security import audit

ROOT = audit.HERE.parent
REQUIREMENTS = ROOT / "requirements.txt"
ARMV7 = ROOT / "requirements-armv7.txt"
TRIM = ROOT / "docker" / "trim-venv.sh"
BEGIN = "<!-- audit-figures: written by `python -m security.summary --doc docs/security.md` -->"
END = "<!-- /audit-figures -->"
_UNINSTALL = re.compile(r"pip uninstall -y -q ((?:[A-Za-z0-9._-]+ ?)+)")


def top_level(requirements: Path) -> list[Requirement]:
    """The requirements a file names (any specifier) whose markers hold on this machine."""
    found = []
    for raw in requirements.read_text().splitlines():
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith(("#", "-")):
            continue
        try:
            requirement = Requirement(line)
        except InvalidRequirement:
            raise SystemExit(f"{requirements}: not a requirement: {raw.strip()}") from None
        if requirement.marker is None or requirement.marker.evaluate():
            found.append(requirement)
    return found


def installed_closure(requirements: Path) -> dict[str, str]:
    """The installed distributions that `requirements` pulls in, transitively (this interpreter's), by name."""
    found: dict[str, str] = {}
    todo = top_level(requirements)
    while todo:
        requirement = todo.pop()
        name = canonicalize_name(requirement.name)
        if name in found:
            continue
        dist = metadata.distribution(name)
        found[name] = dist.version
        extras = {""} | set(requirement.extras)
        for text in dist.requires or ():
            child = Requirement(text)
            if child.marker is None or any(child.marker.evaluate({"extra": extra}) for extra in extras):
                todo.append(child)
    return found


def trimmed(script: Path = TRIM) -> set[str]:
    """The distributions docker/trim-venv.sh uninstalls from the amd64/arm64 images (tracing off, the default)."""
    names = {str(canonicalize_name(n)) for match in _UNINSTALL.findall(script.read_text()) for n in match.split()}
    if not names:
        raise SystemExit(f"{script}: no `pip uninstall -y -q` line found")
    return names


def reports(snapshot: Mapping, notes: Mapping) -> list[tuple[str, audit.Report]]:
    """(where, the audit of it) for the server venv, the amd64/arm64 images and the armv7 image; both images are
    trimmed by docker/trim-venv.sh after their packages are installed. The venv's distributions are listed by a
    fresh interpreter, as `make audit` lists them: once pkg_resources is imported, this one's path also holds
    setuptools' vendored packages."""
    removed = trimmed()

    def image(packages: Mapping[str, str]) -> dict[str, str]:
        return {name: version for name, version in packages.items() if name not in removed}

    return [
        (where, audit.audit(packages, where, snapshot, notes))
        for where, packages in (
            ("server venv (`.venv`: the servers, the tests and the tools)", audit.installed_in(sys.executable)),
            ("amd64/arm64 images, TFLite and OpenVINO (requirements.txt)", image(installed_closure(REQUIREMENTS))),
            ("armv7 image (requirements-armv7.txt)", image(audit.pinned_in(ARMV7))),
        )
    ]


def block(snapshot: Mapping | None = None, notes: Mapping | None = None) -> str:
    """The generated part of docs/security.md's "What it finds"."""
    snapshot = snapshot if snapshot is not None else audit.load_json(audit.DEFAULT_SNAPSHOT)
    notes = notes if notes is not None else audit.load_json(audit.DEFAULT_NOTES)["notes"]
    found = reports(snapshot, notes)
    lines = [
        f"The snapshot holds {len(snapshot['advisories'])} advisories for {len(snapshot.get('coverage', {}))} "
        f"packages (retrieved {snapshot.get('snapshot', {}).get('retrieved', '?').split(',')[0]}). What the audit finds "
        "(the images' packages as docker/trim-venv.sh leaves them):",
        "",
        "| where | packages | advisories (distinct by alias) | in packages |",
        "|---|---:|---:|---:|",
    ]
    for where, report in found:
        with_findings = {f.package for f in report.findings}
        lines.append(
            f"| {where} | {len(report.packages)} | {len(report.findings)} "
            f"({audit.distinct_vulnerabilities(report.findings)}) | {len(with_findings)} |"
        )
    amd64, armv7 = (set(report.not_covered) for _, report in found[1:])
    lines += [
        "",
        "Runtime packages of the images that the snapshot does not cover (not checked, which is not clean): "
        + ", ".join(sorted(amd64 & armv7))
        + (f"; amd64/arm64 only: {', '.join(sorted(amd64 - armv7))}" if amd64 - armv7 else "")
        + (f"; armv7 only: {', '.join(sorted(armv7 - amd64))}" if armv7 - amd64 else "")
        + ".",
    ]
    return "\n".join(lines) + "\n"


def generated(text: str) -> str | None:
    """The block a Markdown text holds between BEGIN and END (None without them)."""
    if BEGIN not in text:
        return None
    return text.split(BEGIN + "\n", 1)[1].split(END, 1)[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--doc", type=Path, help="rewrite this Markdown file's generated block")
    args = parser.parse_args(argv)
    text = block()
    if args.doc is None:
        sys.stdout.write(text)
        return 0
    doc = args.doc.read_text()
    if generated(doc) is None:
        print(f"{args.doc}: no {BEGIN} ... {END} block", file=sys.stderr)
        return 2
    head, rest = doc.split(BEGIN, 1)
    args.doc.write_text(head + BEGIN + "\n" + text + END + rest.split(END, 1)[1])
    print(f"wrote {args.doc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
