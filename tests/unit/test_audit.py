"""security/audit.py: the offline dependency audit (in-process, no network, well under a second)."""

from __future__ import annotations

import json
import sys

import pytest
from packaging.version import Version

from security import audit
from tests.support.paths import ROOT

SNAPSHOT = json.loads((ROOT / "security" / "advisories" / "pypa-osv.json").read_text())
NOTES = json.loads((ROOT / "security" / "advisories" / "reachability.json").read_text())["notes"]


def ids(report):
    return {f.advisory_id for f in report.findings}


def test_finds_cve_2023_46136_for_werkzeug_2_2_3_and_not_for_3_0_1():
    found = audit.audit({"Werkzeug": "2.2.3"}, "fixture", SNAPSHOT, NOTES)
    f = next(f for f in found.findings if "CVE-2023-46136" in f.aliases)
    assert (f.package, f.version, f.advisory_id, f.fixed) == ("werkzeug", "2.2.3", "PYSEC-2023-221", "3.0.1")
    assert f.reachable and f.note
    # fixed in 2.2.3 itself: not reported for 2.2.3
    assert {"PYSEC-2023-57", "PYSEC-2023-58"}.isdisjoint(ids(found))
    assert "PYSEC-2023-221" not in ids(audit.audit({"werkzeug": "3.0.1"}, "fixture", SNAPSHOT, NOTES))


def test_every_finding_in_the_venv_and_the_armv7_image_has_a_reachability_note():
    venv = audit.audit(audit.installed_in_this_interpreter(), "venv", SNAPSHOT, NOTES)
    armv7 = audit.audit(audit.pinned_in(ROOT / "requirements-armv7.txt"), "armv7", SNAPSHOT, NOTES)
    assert "PYSEC-2023-221" in ids(venv) and "PYSEC-2023-221" in ids(armv7)
    assert venv.unassessed == [] and armv7.unassessed == []
    for f in venv.findings + armv7.findings:
        assert f.note and f.reachable, f.advisory_id
    # cryptography and pip are not in the armv7 image list; seldon's pins are
    assert {f.package for f in armv7.findings} >= {"werkzeug", "flask-cors", "gunicorn", "protobuf", "urllib3"}
    assert {"cryptography", "pip"}.isdisjoint(f.package for f in armv7.findings)


def test_a_finding_without_a_note_fails_the_audit(tmp_path, capsys):
    notes = {"notes": {k: v for k, v in NOTES.items() if k != "PYSEC-2023-221"}}
    (tmp_path / "notes.json").write_text(json.dumps(notes))
    (tmp_path / "freeze.txt").write_text("Werkzeug==2.2.3\n")
    code = audit.main(["--requirements", str(tmp_path / "freeze.txt"), "--notes", str(tmp_path / "notes.json")])
    out = capsys.readouterr().out
    assert code == 1 and "FAIL: 1 finding(s) without a reachability note: PYSEC-2023-221 (werkzeug)" in out
    assert audit.main(["--requirements", str(tmp_path / "freeze.txt")]) == 0


def test_requirements_markers_comments_and_includes(tmp_path):
    (tmp_path / "base.txt").write_text("gunicorn==20.1.0  # pinned by seldon-core\n")
    (tmp_path / "req.txt").write_text(
        "-r base.txt\n# a comment\nFlask-Cors==3.0.10\n"
        'tflite-runtime==2.14.0 ; platform_machine == "armv7l"\n'
        'opencv-python-headless==4.11.0.86 ; platform_machine != "armv7l"\n'
        "numpy>=1.24\n"
    )
    arm = audit.pinned_in(tmp_path / "req.txt", machine="armv7l")
    assert arm == {"gunicorn": "20.1.0", "flask-cors": "3.0.10", "tflite-runtime": "2.14.0"}
    x86 = audit.pinned_in(tmp_path / "req.txt", machine="x86_64")
    assert "opencv-python-headless" in x86 and "tflite-runtime" not in x86


@pytest.mark.parametrize(
    "events, version, affected",
    [
        ([{"introduced": "0"}, {"fixed": "3.0.1"}], "2.2.3", True),
        ([{"introduced": "0"}, {"fixed": "3.0.1"}], "3.0.1", False),
        ([{"introduced": "2.0.0rc1"}, {"fixed": "3.0.6"}], "1.0.1", False),
        ([{"introduced": "0"}, {"last_affected": "4.0.1"}], "4.0.1", True),
        ([{"introduced": "0"}, {"last_affected": "4.0.1"}], "4.0.2", False),
        ([{"introduced": "0"}], "99", True),  # no fix given
        # unsorted multi-interval range (PYSEC-2023-212's order)
        ([{"introduced": "2.0.0"}, {"fixed": "2.0.7"}, {"introduced": "0"}, {"fixed": "1.26.18"}], "1.26.17", True),
        ([{"introduced": "2.0.0"}, {"fixed": "2.0.7"}, {"introduced": "0"}, {"fixed": "1.26.18"}], "1.26.20", False),
        ([{"introduced": "2.0.0"}, {"fixed": "2.0.7"}, {"introduced": "0"}, {"fixed": "1.26.18"}], "2.0.6", True),
    ],
)
def test_osv_range_evaluation(events, version, affected):
    assert audit.range_affects(events, Version(version)) is affected


def test_snapshot_entries_are_attributed_and_every_note_names_a_snapshot_entry():
    meta = SNAPSHOT["snapshot"]
    assert "CC-BY-4.0" in meta["licence"] and meta["retrieved"]
    known = {a["id"] for a in SNAPSHOT["advisories"]}
    for adv in SNAPSHOT["advisories"]:
        assert adv["source"].split("@")[0] in ("pypa/advisory-database", "westonsteimel/advisory-database-pypa")
        assert ":vulns/" in adv["source"]
    assert set(NOTES) <= known


# The reachability notes rest on a few facts about the pinned packages; if one stops holding (a version
# change, a different protobuf backend), these fail and the notes must be re-read.


def test_premise_protobuf_is_the_pure_python_backend_and_recursion_fails_the_request_only():
    from google.protobuf.internal import api_implementation
    from google.protobuf.message import DecodeError
    from seldon_core.proto import prediction_pb2

    assert api_implementation.Type() == "python"  # CVE-2025-4565 applies (PYSEC-2026-1806)
    sgroup = bytes([0xA3, 0x06])  # start-group tag of unknown field 100
    with pytest.raises((RecursionError, DecodeError)):
        prediction_pb2.SeldonMessage.FromString(sgroup * 5000)


def test_premise_flask_cors_3_0_10_answers_any_origin_without_private_network_header():
    from flask import Flask
    from flask_cors import CORS

    app = Flask(__name__)
    CORS(app)  # as seldon_core.wrapper does

    @app.route("/api/v1.0/predictions", methods=["POST"])
    def predictions():
        return "ok"

    r = app.test_client().options(
        "/api/v1.0/predictions",
        headers={
            "Origin": "http://evil.example",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Private-Network": "true",
        },
    )
    assert r.headers.get("Access-Control-Allow-Origin") == "http://evil.example"  # docs/security.md, CORS
    assert "Access-Control-Allow-Private-Network" not in r.headers  # PYSEC-2024-71: not applicable


def test_premise_botocore_makes_urllib3_follow_no_redirect_and_decode_nothing():
    import inspect

    from botocore.httpsession import URLLib3Session

    source = inspect.getsource(URLLib3Session.send)
    assert "retries=Retry(False)" in source and "decode_content=False" in source  # urllib3 notes


# --- the figures in docs/security.md ---------------------------------------------------------------------


def test_the_figures_in_docs_security_md_are_the_audits():
    """The generated block is what `python -m security.summary` finds now (run it with --doc to update it)."""
    from security import summary

    doc = (ROOT / "docs" / "security.md").read_text()
    assert summary.generated(doc) == summary.block(SNAPSHOT, NOTES), "python -m security.summary --doc docs/security.md"


def test_the_per_package_table_in_docs_security_md_is_the_venvs_findings():
    venv = audit.audit(audit.installed_in(sys.executable), "venv", SNAPSHOT, NOTES)
    found = {f.package: (f.version, sum(g.package == f.package for g in venv.findings)) for f in venv.findings}
    doc = (ROOT / "docs" / "security.md").read_text()
    table = doc.split("Per package (server venv;", 1)[1].split("\n\n", 2)[1]
    rows = {}
    for line in table.splitlines()[2:]:
        package, version, advisories = (cell.strip() for cell in line.strip("|").split("|")[:3])
        rows[package] = (version, int(advisories.split()[0]))
    assert rows == found


def test_the_images_lose_what_trim_venv_removes_and_keep_what_they_run():
    from security import summary

    removed = summary.trimmed()
    assert {"cryptography", "cffi", "pycparser", "pip", "jaeger-client", "opentracing"} <= removed
    image = summary.installed_closure(summary.REQUIREMENTS)
    assert {"seldon-core", "werkzeug", "gunicorn", "open-inference-grpc", "pybase64", "tornado"} <= image.keys()
    assert not {"pytest", "moto", "ruff", "matplotlib"} & image.keys()  # development tools are not in the images
