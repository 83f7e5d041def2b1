"""Dependency audit: installed packages against a committed snapshot of the PyPA advisory database.

    .venv/bin/python security/audit.py                        # this interpreter's packages (the server venv)
    .venv/bin/python security/audit.py --python /opt/venv/bin/python    # another interpreter / image venv
    .venv/bin/python security/audit.py --requirements requirements-armv7.txt   # a pinned list / pip freeze
    .venv/bin/python security/audit.py --requirements requirements.txt --machine armv7l   # markers for a platform

It reads security/advisories/pypa-osv.json (OSV records trimmed to id, aliases, summary, affected
ranges and their source path in the advisory-database repository; see security/advisories/README.md
for where and when they were taken, and the CC-BY-4.0 notice), matches each installed version against
every ECOSYSTEM/SEMVER range of the advisories for that package (packaging.version ordering), and
prints one row per finding with the reachability note from security/advisories/reachability.json.

Exit status: 0 when every finding has a reachability note; 1 when any finding has none (a new
advisory, or a package version that newly matches one, must be assessed before the audit passes);
2 for bad input. It never touches the network.

Coverage: the snapshot holds only the advisories read for the packages listed under "coverage"; an
installed package outside that list is reported as "not covered" (and fails the audit only with
--strict-coverage), because no advisory match there means "not checked", not "no advisories".
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import textwrap
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from packaging.markers import InvalidMarker, Marker
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

HERE = Path(__file__).resolve().parent
DEFAULT_SNAPSHOT = HERE / "advisories" / "pypa-osv.json"
DEFAULT_NOTES = HERE / "advisories" / "reachability.json"


@dataclass(frozen=True)
class Finding:
    package: str
    version: str
    advisory_id: str
    aliases: tuple[str, ...]
    fixed: str
    summary: str
    reachable: str | None  # from the notes file; None = not assessed
    note: str | None


@dataclass
class Report:
    source: str
    findings: list[Finding] = field(default_factory=list)
    not_covered: list[str] = field(default_factory=list)
    packages: dict[str, str] = field(default_factory=dict)

    @property
    def unassessed(self) -> list[Finding]:
        return [f for f in self.findings if f.note is None]


# ---------------------------------------------------------------- inputs


def installed_in_this_interpreter() -> dict[str, str]:
    from importlib.metadata import distributions

    found: dict[str, str] = {}
    for dist in distributions():
        name = dist.metadata["Name"]
        if name:
            found.setdefault(canonicalize_name(name), dist.version)
    return found


_DUMP = (
    "import json, importlib.metadata as m;"
    "print(json.dumps({d.metadata['Name']: d.version for d in m.distributions() if d.metadata['Name']}))"
)


def installed_in(python: str) -> dict[str, str]:
    """Distributions of another interpreter (a venv's bin/python, or one inside an image)."""
    out = subprocess.run([python, "-c", _DUMP], check=True, capture_output=True, text=True).stdout
    return {canonicalize_name(k): v for k, v in json.loads(out).items()}


_PIN = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[[^\]]*\])?\s*===?\s*([^\s;#]+)\s*(?:;([^#]*))?")


def pinned_in(path: Path, machine: str | None = None, _seen: set[Path] | None = None) -> dict[str, str]:
    """`name==version` lines of a requirements file or `pip freeze` output.

    Environment markers are evaluated for this machine, or with platform_machine=`machine`. Lines that
    are not exact pins (ranges, URLs, options other than -r) are ignored: an image's list must be its
    full pinned closure (like requirements-armv7.txt, or `pip freeze` run in the image).
    """
    seen = _seen if _seen is not None else set()
    path = path.resolve()
    if path in seen:
        return {}
    seen.add(path)
    env = {"platform_machine": machine} if machine else None
    found: dict[str, str] = {}
    for raw in path.read_text().splitlines():
        line = raw.split(" #", 1)[0].strip() if not raw.lstrip().startswith("#") else ""
        if not line:
            continue
        if line.startswith(("-r ", "--requirement ")):
            found.update(pinned_in(path.parent / line.split(None, 1)[1], machine, seen))
            continue
        m = _PIN.match(line)
        if not m:
            continue
        name, version, marker = m.group(1), m.group(2), (m.group(3) or "").strip()
        if marker:
            try:
                if not Marker(marker).evaluate(env):
                    continue
            except InvalidMarker:
                raise SystemExit(f"{path}: bad environment marker in: {raw.strip()}") from None
        found[canonicalize_name(name)] = version
    return found


# ---------------------------------------------------------------- matching


def _v(text: str) -> Version:
    return Version("0") if text == "0" else Version(text)


def range_affects(events: Sequence[Mapping[str, str]], version: Version) -> bool:
    """OSV ECOSYSTEM/SEMVER range evaluation: the last event at or below `version` decides."""
    points = []
    for event in events:
        for kind in ("introduced", "fixed", "last_affected", "limit"):
            if kind in event:
                points.append((kind, _v(event[kind])))
    # Ascending by version; at equal versions an introduced comes before the events that close it.
    order = {"introduced": 0, "last_affected": 1, "fixed": 2, "limit": 2}
    points.sort(key=lambda p: (p[1], order[p[0]]))
    affected = False
    for kind, at in points:
        if kind == "introduced" and version >= at:
            affected = True
        elif kind in ("fixed", "limit") and version >= at:
            affected = False
        elif kind == "last_affected" and version > at:
            affected = False
    return affected


def affected_entry_matches(affected: Mapping, version_text: str) -> bool:
    if version_text in affected.get("versions", ()):
        return True
    try:
        version = Version(version_text)
    except InvalidVersion:
        return False
    for rng in affected.get("ranges", ()):
        if rng.get("type") not in ("ECOSYSTEM", "SEMVER"):
            continue
        try:
            if range_affects(rng.get("events", ()), version):
                return True
        except InvalidVersion:
            continue
    return False


def fixed_versions(affected: Mapping) -> str:
    fixed = [e[k] for r in affected.get("ranges", ()) for e in r.get("events", ()) for k in ("fixed",) if k in e]
    last = [e["last_affected"] for r in affected.get("ranges", ()) for e in r.get("events", ()) if "last_affected" in e]
    if fixed:
        return ", ".join(fixed)
    if last:
        return "after " + ", ".join(last)
    return "none given"


def load_json(path: Path) -> dict:
    return json.loads(path.read_text())


def audit(
    packages: Mapping[str, str],
    source: str,
    snapshot: Mapping | None = None,
    notes: Mapping | None = None,
) -> Report:
    snapshot = snapshot if snapshot is not None else load_json(DEFAULT_SNAPSHOT)
    notes = notes if notes is not None else load_json(DEFAULT_NOTES)["notes"]
    packages = {canonicalize_name(k): v for k, v in packages.items()}
    report = Report(source=source, packages=dict(sorted(packages.items())))
    covered = {canonicalize_name(name) for name in snapshot.get("coverage", {})}
    report.not_covered = sorted(name for name in packages if name not in covered)
    for adv in snapshot["advisories"]:
        if adv.get("withdrawn"):
            continue
        for affected in adv.get("affected", ()):
            pkg = affected.get("package", {})
            if pkg.get("ecosystem", "PyPI") != "PyPI":
                continue
            name = canonicalize_name(pkg.get("name", ""))
            if name not in packages or not affected_entry_matches(affected, packages[name]):
                continue
            note = notes.get(adv["id"])
            report.findings.append(
                Finding(
                    package=name,
                    version=packages[name],
                    advisory_id=adv["id"],
                    aliases=tuple(adv.get("aliases", ())),
                    fixed=fixed_versions(affected),
                    summary=adv.get("summary", ""),
                    reachable=note.get("reachable") if note else None,
                    note=note.get("note") if note else None,
                )
            )
            break
    report.findings.sort(key=lambda f: (f.package, f.advisory_id))
    return report


# ---------------------------------------------------------------- output


def _cve(aliases: Iterable[str]) -> str:
    cves = [a for a in aliases if a.startswith("CVE-")]
    ghsa = [a for a in aliases if a.startswith("GHSA-")]
    return ", ".join(cves or ghsa) or "-"


def distinct_vulnerabilities(findings: Sequence[Finding]) -> int:
    """Findings with a shared CVE/GHSA alias (the database has a few duplicate entries) count once."""
    groups: list[set[str]] = []
    for f in findings:
        ids = {f.advisory_id, *f.aliases}
        for g in groups:
            if g & ids:
                g |= ids
                break
        else:
            groups.append(ids)
    return len(groups)


def render(report: Report, width: int = 100, brief: bool = False) -> str:
    """The table: one row per finding, its reachability note wrapped under it (one line with brief=True)."""
    lines = [f"== {report.source}: {len(report.packages)} packages"]
    by_pkg: dict[str, int] = {}
    for f in report.findings:
        by_pkg[f.package] = by_pkg.get(f.package, 0) + 1
    lines.append(
        f"{len(report.findings)} advisories ({distinct_vulnerabilities(report.findings)} distinct by alias) "
        f"in {len(by_pkg)} packages: " + ", ".join(f"{p} {report.packages[p]} ({n})" for p, n in by_pkg.items())
    )
    lines.append(f"{'package':<12} {'version':<9} {'advisory':<16} {'CVE':<16} {'fixed in':<22} reachable")
    lines.append("-" * width)
    for f in report.findings:
        note = f.note if f.note is not None else "NOT ASSESSED: add a note to security/advisories/reachability.json"
        row = (
            f"{f.package:<12} {f.version:<9} {f.advisory_id:<16} {_cve(f.aliases):<16} "
            f"{f.fixed[:22]:<22} {f.reachable or '?'}"
        )
        lines.append(row)
        if brief:
            lines.append("    " + (note if len(note) <= width - 4 else note[: width - 5] + "…"))
        else:
            lines.extend(textwrap.wrap(note, width, initial_indent="    ", subsequent_indent="    "))
    if report.not_covered:
        lines.extend(
            textwrap.wrap(
                f"not covered by the snapshot ({len(report.not_covered)}; not checked, which is not 'clean'): "
                + ", ".join(report.not_covered),
                width,
            )
        )
    if report.unassessed:
        lines.append(
            f"FAIL: {len(report.unassessed)} finding(s) without a reachability note: "
            + ", ".join(f"{f.advisory_id} ({f.package})" for f in report.unassessed)
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--python", action="append", default=[], help="audit this interpreter's packages")
    parser.add_argument(
        "--requirements",
        "--freeze",
        action="append",
        default=[],
        type=Path,
        help="audit a pinned list (requirements file with ==, or pip freeze output)",
    )
    parser.add_argument("--machine", help="platform_machine for environment markers in --requirements files")
    parser.add_argument("--snapshot", type=Path, default=DEFAULT_SNAPSHOT)
    parser.add_argument("--notes", type=Path, default=DEFAULT_NOTES)
    parser.add_argument("--brief", action="store_true", help="one line per reachability note")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument(
        "--strict-coverage", action="store_true", help="also fail on packages the snapshot does not cover"
    )
    args = parser.parse_args(argv)

    try:
        snapshot = load_json(args.snapshot)
        notes = load_json(args.notes)["notes"]
    except (OSError, ValueError, KeyError) as exc:
        print(f"audit: cannot read the snapshot or notes: {exc}", file=sys.stderr)
        return 2

    inputs: list[tuple[str, dict[str, str]]] = []
    try:
        for python in args.python:
            inputs.append((f"python {python}", installed_in(python)))
        for path in args.requirements:
            label = f"list {path}" + (f" (platform_machine={args.machine})" if args.machine else "")
            inputs.append((label, pinned_in(path, args.machine)))
    except (OSError, subprocess.CalledProcessError, ValueError) as exc:
        print(f"audit: cannot read the packages: {exc}", file=sys.stderr)
        return 2
    if not inputs:
        inputs.append((f"python {sys.executable}", installed_in_this_interpreter()))

    meta = snapshot.get("snapshot", {})
    reports = [audit(pkgs, label, snapshot, notes) for label, pkgs in inputs]
    if args.json:
        print(
            json.dumps(
                [
                    {
                        "source": r.source,
                        "findings": [f.__dict__ for f in r.findings],
                        "not_covered": r.not_covered,
                    }
                    for r in reports
                ],
                indent=1,
            )
        )
    else:
        header = (
            f"Advisory snapshot {args.snapshot.name}: {len(snapshot['advisories'])} PyPA advisory-database entries "
            f"for {len(snapshot.get('coverage', {}))} packages; retrieved {meta.get('retrieved', '?')}; newest entry "
            f"modified {meta.get('newest_modified', '?')}. Offline: no advisory service is queried."
        )
        print("\n".join(textwrap.wrap(header, 100)))
        for r in reports:
            print(render(r, brief=args.brief))
    failed = any(r.unassessed for r in reports) or (args.strict_coverage and any(r.not_covered for r in reports))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
