"""The benchmark cannot rot: its smoke mode (a few requests, one model, six payloads) runs end to end
through the real servers and writes its JSON and Markdown. No timing is asserted."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.support.paths import ROOT


def test_bench_smoke_writes_results(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench.run", "--smoke", "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    report = json.loads((tmp_path / "bench.json").read_text())
    for key in (
        "date",
        "machine",
        "versions",
        "budget",
        "config",
        "loadavg_start",
        "loadavg_end",
        "rows",
        "ratios",
        "targets",
    ):
        assert key in report, key
    assert report["mode"] == "smoke"
    assert report["machine"]["cores"] >= 1 and report["machine"]["cpu"]
    for dist in ("python", "seldon-core", "ai-edge-litert", "openvino", "numpy", "opencv-python-headless"):
        assert report["versions"][dist]

    cases = {(r["target"], r["case"]) for r in report["rows"]}
    assert {
        ("in-process tflite", "invoke"),
        ("in-process tflite", "pipeline"),
        ("TFLiteServer", "rest_image"),
        ("TFLiteServer", "rest_ndarray"),
        ("TFLiteServer", "grpc_tftensor"),
        ("naive", "rest_ndarray"),
    } <= cases
    for row in report["rows"]:
        assert row["errors"] == 0, row
        assert set(row["throughput"]) == {"1", "2"}
        for key in ("p50_ms", "p90_ms", "p99_ms", "loadavg_before"):
            assert row[key] is not None, (key, row)
        if not row["target"].startswith("in-process"):
            # the whole tree is measured: one process serves REST and gRPC (GRPC_WORKERS=1), the naive server one too
            assert row["memory"]["processes"] >= 1 and row["memory"]["rss_mb"] > 0 and row["memory"]["pss_mb"] > 0
            assert row["cold_start_s"] > 0 and row["server_alive_after"]
    labels = next(r for r in report["rows"] if r["target"] == "TFLiteServer" and r["case"] == "rest_image")["answer"]
    assert labels.startswith("jsonData list of 5")
    assert {r["case"] for r in report["ratios"]} >= {"rest_image", "rest_ndarray", "grpc_tftensor"}

    markdown = (tmp_path / "bench.md").read_text()
    for heading in (
        "# Benchmark results (smoke)",
        "## Latency (concurrency 1) and throughput",
        "## Ratios",
        "## Targets",
    ):
        assert heading in markdown
    assert report["machine"]["cpu"] in markdown and f"seldon-core {report['versions']['seldon-core']}" in markdown


def test_the_results_in_the_docs_are_the_committed_results() -> None:
    """bench/results/bench.md and the results block of docs/benchmarks.md (and any other doc that has one) are
    generated from bench/results/bench.json and decode.md, not typed in: `python -m bench.report --doc FILE`."""
    from bench.report import generated_block, markdown, summary

    results = ROOT / "bench" / "results"
    report = json.loads((results / "bench.json").read_text())
    assert (results / "bench.md").read_text() == markdown(report)
    block = summary(report, (results / "decode.md").read_text())
    blocks = {
        doc.relative_to(ROOT): generated_block(doc.read_text()) for doc in [ROOT / "README.md", *ROOT.glob("docs/*.md")]
    }
    assert blocks[Path("docs/benchmarks.md")] is not None
    for doc, found in blocks.items():
        assert found in (None, block), f"{doc}: python -m bench.report --doc {doc}"


def test_the_stage_clock_still_times_every_hand_over() -> None:
    """bench.stages wraps the REST worker's steps from outside (bench/stage_clock); when a step it wraps is
    renamed or reordered, requests stop being timed and the profile in docs/benchmarks.md cannot be redone."""
    from bench.stages import CPU_PARTS, STAGES, measure

    result = measure(requests=20, rounds=1, concurrency=1)
    assert result["timed"] >= 20, result
    assert set(result["stages_ms"]) == set(STAGES) and set(result["request_thread_cpu_ms"]) == set(CPU_PARTS)
    assert all(ms >= 0 for ms in result["stages_ms"].values()), result
    assert result["stages_ms"]["predict_raw (decode, infer, answer)"] > 0, result
