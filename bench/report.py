"""bench.json, bench.md (tables, ratios, targets) and bench.png (latency and throughput) from one run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

CASE_TEXT = {
    "invoke": "invoke() alone",
    "pipeline": "pipeline: JPEG -> answer",
    "rest_image": "REST binData JPEG",
    "rest_ndarray": "REST data.ndarray",
    "grpc_image": "gRPC binData JPEG",
    "grpc_tftensor": "gRPC data.tftensor",
    "grpc_tensor": "gRPC data.tensor",
    "rest_tftensor": "REST data.tftensor",
    "oip_rest_binary": "OIP REST binary tensors",
    "oip_grpc": "OIP gRPC raw tensors",
}
# Open Inference Protocol case -> the v1 tftensor case it must be at least as fast as.
OIP_VERSUS_V1 = {"oip_rest_binary": ("rest_tftensor", "grpc_tftensor"), "oip_grpc": ("grpc_tftensor",)}


def _find(rows: list[dict], model: str, target: str, case: str) -> dict | None:
    return next((r for r in rows if r["model"] == model and r["target"] == target and r["case"] == case), None)


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 2) if a and b else None


def ratios(rows: list[dict]) -> list[dict[str, Any]]:
    """server p50 / in-process p50 and server throughput at 4 / in-process throughput at 4, per model and payload."""
    out = []
    for r in rows:
        if r["target"].startswith("in-process") or r["target"] == "naive":
            continue
        limit_case = "pipeline" if r["case"].endswith("image") else "invoke"
        limit = _find(rows, r["model"], f"in-process {r['runtime']}", limit_case)
        naive = _find(rows, r["model"], "naive", "rest_ndarray") if r["case"] == "rest_ndarray" else None
        out.append(
            {
                "model": r["model"],
                "server": r["target"],
                "case": r["case"],
                "versus": f"in-process {limit_case}",
                "p50_ratio": _ratio(r.get("p50_ms"), limit.get("p50_ms") if limit else None),
                "throughput4_ratio": _ratio(r["throughput"].get("4"), limit["throughput"].get("4") if limit else None),
                "naive_speedup": _ratio(naive.get("p50_ms") if naive else None, r.get("p50_ms")),
            }
        )
    return out


def targets(rows: list[dict], ratio_rows: list[dict]) -> list[dict[str, Any]]:
    def ratio(model: str, server: str, case: str, key: str) -> float | None:
        found = next(
            (x for x in ratio_rows if x["model"] == model and x["server"] == server and x["case"] == case), None
        )
        return found[key] if found else None

    out = []
    models = sorted({r["model"] for r in rows}, key=[r["model"] for r in rows].index)
    for m in models:
        v = ratio(m, "TFLiteServer", "rest_image", "p50_ratio")
        if _find(rows, m, "TFLiteServer", "rest_image"):  # not measured in a run of other cases (--cases)
            out.append(("REST JPEG p50 <= 1.25x in-process pipeline", m, v, v is not None and v <= 1.25))
    v = ratio("face_mask", "TFLiteServer", "grpc_tftensor", "p50_ratio")
    if v is not None:
        out.append(
            ("gRPC tftensor p50 <= 1.3x in-process invoke() (face-mask, detection answer)", "face_mask", v, v <= 1.3)
        )
    v = ratio("face_mask", "TFLiteServer raw outputs", "grpc_tftensor", "p50_ratio")
    if v is not None:
        out.append(("gRPC tftensor p50 <= 1.3x in-process invoke() (face-mask, raw outputs)", "face_mask", v, v <= 1.3))
    for m in models:
        server = (
            "TFLiteServer raw outputs"
            if m == "face_mask" and _find(rows, m, "TFLiteServer raw outputs", "rest_ndarray")
            else "TFLiteServer"
        )
        v = ratio(m, server, "rest_ndarray", "naive_speedup")
        if v is not None:
            out.append((f"REST ndarray >= 3x faster than naive ({server})", m, v, v >= 3))
    for m in models:
        v = ratio(m, "TFLiteServer", "rest_image", "throughput4_ratio")
        if not _find(rows, m, "TFLiteServer", "rest_image"):
            continue
        errors = sum(r.get("errors", 0) for r in rows if r["model"] == m)
        out.append(
            (
                "throughput at 4 >= 0.85x in-process (REST JPEG vs pipeline), no errors",
                m,
                v,
                v is not None and v >= 0.85 and errors == 0,
            )
        )
    for m in models:
        for server in sorted({r["target"] for r in rows if r["model"] == m and r["case"] in OIP_VERSUS_V1}):
            for case, v1_cases in OIP_VERSUS_V1.items():
                oip = _find(rows, m, server, case)
                for v1_case in v1_cases:
                    v1 = _find(rows, m, server, v1_case)
                    if oip and v1 and oip.get("p50_ms") and v1.get("p50_ms"):
                        v = _ratio(oip["p50_ms"], v1["p50_ms"])
                        out.append(
                            (
                                f"{CASE_TEXT[case]} p50 <= v1 {CASE_TEXT[v1_case]} p50 ({server}; ratio OIP / v1)",
                                m,
                                v,
                                v is not None and v <= 1.0,
                            )
                        )
    r = _find(rows, "mobilenet_v2_quant", "TFLiteServer", "rest_image")
    if r:
        out.append(
            (
                "TFLite RSS (whole tree) < 150 MB, mobilenet_v2",
                "mobilenet_v2_quant",
                r["memory"]["rss_mb"],
                r["memory"]["rss_mb"] < 150,
            )
        )
        out.append(
            (
                "TFLite PSS (whole tree) < 150 MB, mobilenet_v2",
                "mobilenet_v2_quant",
                r["memory"]["pss_mb"],
                r["memory"]["pss_mb"] < 150,
            )
        )
    for m in models:
        r = _find(rows, m, "TFLiteServer", "rest_image") or _find(rows, m, "TFLiteServer", "grpc_tftensor")
        if r:
            out.append(("TFLite cold start < 3 s", m, r["cold_start_s"], r["cold_start_s"] < 3))
    return [{"target": t, "model": m, "value": v, "met": bool(ok)} for t, m, v, ok in out]


def _fmt(v: Any) -> str:
    return "-" if v is None else (f"{v:g}" if isinstance(v, float) else str(v))


def markdown(report: dict[str, Any]) -> str:
    m, v = report["machine"], report["versions"]
    lines = [
        f"# Benchmark results ({report['mode']})",
        "",
        f"- Date: {report['date']}; duration {report['duration_s']} s",
        f"- Machine: {m['cpu']}, {m['cores']} cores, {m['memory_mb']} MB RAM, {m['arch']}, Linux {m['kernel']}",
        "- Versions: " + ", ".join(f"{k} {val}" for k, val in v.items()),
        f"- Code: commit {report['source']['commit']}"
        + (
            f", server files changed: {'; '.join(report['source']['server_code_changed'])}"
            if report["source"]["server_code_changed"]
            else ", no uncommitted server changes"
        )
        + (
            f"; at the end: commit {report['source_end']['commit']}"
            + (" (changed during the run)" if report["source_end"] != report["source"] else "")
            if report.get("source_end")
            else ""
        ),
        f"- Server and in-process configuration: {report['config']}",
        f"- Load average (1, 5, 15 min) at start {report['loadavg_start']}, at end {report['loadavg_end']}: "
        "other work on the machine competes with the benchmark; each row gives the 1-minute load when it started.",
        f"- Budget per case: concurrency 1: up to {report['budget']['latency_requests']} requests or "
        f"{report['budget']['latency_cap_s']} s; each of concurrency {report['budget']['concurrency'][1:]}: up to "
        f"{report['budget']['load_requests']} requests or {report['budget']['load_cap_s']} s. Loopback only.",
        "",
        "## Latency (concurrency 1) and throughput",
        "",
        "| model | target | payload | p50 ms | p90 ms | p99 ms | req/s at "
        + " / ".join(str(c) for c in report["budget"]["concurrency"])
        + " | errors | RSS / PSS MB (tree) | cold start s | load |",
        "|---|---|---|---:|---:|---:|---|---:|---|---:|---:|",
    ]
    for r in report["rows"]:
        mem = f"{r['memory']['rss_mb']:g} / {r['memory']['pss_mb']:g}" if "memory" in r else "-"
        lines.append(
            f"| {r['model']} | {r['target']} | {CASE_TEXT.get(r['case'], r['case'])} | {_fmt(r.get('p50_ms'))} | {_fmt(r.get('p90_ms'))} | "
            f"{_fmt(r.get('p99_ms'))} | {' / '.join(_fmt(r['throughput'].get(str(c))) for c in report['budget']['concurrency'])} | {r['errors']} | {mem} | "
            f"{_fmt(r.get('cold_start_s'))} | {r['loadavg_before'][0]} |"
        )
    lines += [
        "",
        "## Ratios",
        "",
        "server p50 / in-process p50 (JPEG payloads against the pipeline, tensor payloads against invoke()); "
        "server req/s at concurrency 4 / in-process req/s at 4 with the same interpreters and threads; "
        "naive p50 / server p50 on the same REST ndarray payload.",
        "",
        "| model | server | payload | versus | p50 ratio | throughput@4 ratio | faster than naive |",
        "|---|---|---|---|---:|---:|---:|",
    ]
    for x in report["ratios"]:
        lines.append(
            f"| {x['model']} | {x['server']} | {CASE_TEXT.get(x['case'], x['case'])} | {x['versus']} | {_fmt(x['p50_ratio'])} | "
            f"{_fmt(x['throughput4_ratio'])} | {_fmt(x['naive_speedup'])} |"
        )
    for title, part in (
        ("Targets", _target_lines(report)),
        ("Defaults", _defaults_lines(report)),
        ("Memory per configuration", _memory_lines(report)),
        ("Image sizes", _image_lines(report)),
        (SWEEP_TITLE, _sweep_lines(report)),
    ):
        if part:
            lines += ["", f"## {title}", "", *part]
    return "\n".join(lines) + "\n"


SWEEP_TITLE = "Settings sweep: mobilenet_v2_quant, REST JPEG, TFLiteServer"


def _target_lines(report: dict[str, Any]) -> list[str]:
    lines = ["| target | model | measured | met |", "|---|---|---:|---|"]
    for t in report["targets"]:
        lines.append(f"| {t['target']} | {t['model']} | {_fmt(t['value'])} | {'yes' if t['met'] else 'NO'} |")
    return lines


def _sweep_lines(report: dict[str, Any]) -> list[str]:
    if not report.get("sweep"):
        return []
    lines = [
        "| settings | configuration | p50 ms | req/s at 1 / 4 | in-process pipeline p50 ms | in-process req/s at 1 / 4 | RSS / PSS MB | cold start s | load |",
        "|---|---|---:|---|---:|---|---|---:|---:|",
    ]
    for name in dict.fromkeys(r["sweep"] for r in report["sweep"]):
        srv = next((r for r in report["sweep"] if r["sweep"] == name and "memory" in r), None)
        lim = next((r for r in report["sweep"] if r["sweep"] == name and "memory" not in r), None)
        if not srv:
            continue
        lines.append(
            f"| {name} | {srv['config']} | {_fmt(srv.get('p50_ms'))} | {' / '.join(_fmt(x) for x in srv['throughput'].values())} | "
            f"{_fmt(lim and lim.get('p50_ms'))} | {' / '.join(_fmt(x) for x in lim['throughput'].values()) if lim else '-'} | "
            f"{srv['memory']['rss_mb']:g} / {srv['memory']['pss_mb']:g} | {srv['cold_start_s']} | {srv['loadavg_before'][0]} |"
        )
    return lines


def _memory_lines(report: dict[str, Any]) -> list[str]:
    if not report.get("memory"):
        return []
    lines = [
        "| server | configuration | processes | PSS as if alone MB | PSS MB | anonymous MB | load |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in report["memory"]:
        env = " ".join(f"{k}={v}" for k, v in r["env"].items())
        lines.append(
            f"| {r['server']} | {r['config']} ({env}) | {r['processes']} | {_fmt(r['alone_pss_mb'])} | {_fmt(r['pss_mb'])} "
            f"| {_fmt(r['anon_mb'])} | {r['loadavg']} |"
        )
    return lines


def _image_lines(report: dict[str, Any]) -> list[str]:
    images = report.get("images")
    if not images:
        return ["Not measured: `make image-sizes` writes bench/results/images.json."]
    lines = [
        f"Measured by `make image-sizes` on {images['date']} at commit {images['commit']} (local Debian bases).",
        "",
        "| image | arch | uncompressed MB | compressed (pull) MB |",
        "|---|---|---:|---:|",
    ]
    for r in images["images"]:
        lines.append(f"| {r['image']} | {r['arch']} | {r['uncompressed_mb']} | {r['compressed_mb']} |")
    return lines


def _defaults_lines(report: dict[str, Any]) -> list[str]:
    d = report.get("defaults")
    if not d:
        return []
    return [
        "| only `model_uri` set, GUNICORN_THREADS=4, REST binData JPEG | server | in-process | ratio | target |",
        "|---|---:|---:|---:|---|",
        f"| p50 at concurrency 1, ms | {d['p50_ms']} | {d['in_process_p50_ms']} (its defaults) | {d['p50_ratio']} | <= 1.25 |",
        f"| req/s at concurrency 4 | {d['rps_4']} | {d['in_process_rps_4']} (2 x 1 thread) | {d['rps_4_ratio']} | >= 0.85 |",
        f"| CPU ms per request at concurrency 4 (cores busy) | {d['cpu_ms_4']} ({d['cores_busy_4']}; "
        f"client {d['client_cpu_ms_4']}) | {d['in_process_cpu_ms_4']} ({d['in_process_cores_busy_4']}) | "
        f"{d['cpu_ms_4'] / d['in_process_cpu_ms_4']:.2f} | |",
    ]


SUMMARY_CASES = ("invoke", "pipeline", "rest_image", "grpc_image", "grpc_tftensor", "rest_ndarray")


def _duration(seconds: float) -> str:
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest} s" if minutes else f"{rest} s"


def summary(report: dict[str, Any], decode: str | None = None) -> str:
    """The results docs/benchmarks.md shows from one `make bench` (`decode`: its decode.md): the run, p50 per
    model and payload, the targets, the defaults, the settings sweep, memory, large frames and image sizes."""
    m = report["machine"]
    rows = report["rows"]
    lines = [
        f"`make bench` of {report['date'][:10]} at commit {report['source']['commit'][:7]}, on {m['cpu']} "
        f"({m['cores']} cores, {m['arch']}, {m['memory_mb']} MB); its measurements (`bench.run`) took "
        f"{_duration(report['duration_s'])}, load average {report['loadavg_start'][0]} at the start and "
        f"{report['loadavg_end'][0]} at the end. Servers and in-process runs: {report['config']}. Every row, "
        "OpenVINOServer's, the ratios and the budget per case: `bench/results/bench.md`.",
        "",
        "### Latency",
        "",
        "p50 ms at concurrency 1, TFLiteServer:",
        "",
        "| model | " + " | ".join(CASE_TEXT[c] for c in SUMMARY_CASES) + " | naive REST data.ndarray |",
        "|---|" + "---:|" * (len(SUMMARY_CASES) + 1),
    ]
    models = list(dict.fromkeys(r["model"] for r in rows))
    for model in models:
        cells = []
        for case in SUMMARY_CASES:
            target = "in-process" if case in ("invoke", "pipeline") else "TFLiteServer"
            r = next(
                (x for x in rows if x["model"] == model and x["case"] == case and x["target"].startswith(target)), None
            )
            cells.append(_fmt(r and r.get("p50_ms")))
        naive = _find(rows, model, "naive", "rest_ndarray")
        cells.append(_fmt(naive and naive.get("p50_ms")))
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    decode_lines = [line for line in (decode or "").splitlines() if line.startswith("|")]
    for title, part in (
        ("Targets", _target_lines(report)),
        ("Defaults: only `model_uri` set, mobilenet_v2_quant", _defaults_lines(report)),
        (SWEEP_TITLE, _sweep_lines(report)),
        (
            "Memory per configuration: mobilenet_v2_quant, after 41 REST JPEG predictions (`bench.memory`)",
            _memory_lines(report),
        ),
        ("Large camera frames: decode + preprocess p50, in-process (`bench.decode`)", decode_lines),
        ("Image sizes", _image_lines(report)),
    ):
        if part:
            lines += ["", f"### {title}", "", *part]
    return "\n".join(lines) + "\n"


BEGIN = "<!-- bench-results: written by `python -m bench.report --doc FILE` from bench/results/ -->"
END = "<!-- /bench-results -->"


def generated_block(text: str) -> str | None:
    """What a Markdown text holds between BEGIN and END (None without them)."""
    if BEGIN not in text:
        return None
    return text.split(BEGIN + "\n", 1)[1].split(END, 1)[0]


def update_doc(doc: Path, block: str) -> None:
    """Replace the generated block of a Markdown file."""
    text = doc.read_text()
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    doc.write_text(head + BEGIN + "\n" + block + END + tail)


def chart(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in report["rows"] if r.get("p50_ms")]
    models = list(dict.fromkeys(r["model"] for r in rows))
    fig, axes = plt.subplots(len(models), 2, figsize=(14, 4.2 * len(models)), squeeze=False)
    for i, model in enumerate(models):
        mine = [r for r in rows if r["model"] == model]
        labels = [
            f"{r['target'].replace('in-process ', 'inproc ')}\n{CASE_TEXT.get(r['case'], r['case'])}" for r in mine
        ]
        colors = [
            "tab:green"
            if r["target"].startswith("in-process")
            else "tab:red"
            if r["target"] == "naive"
            else "tab:orange"
            if r["runtime"] == "openvino"
            else "tab:blue"
            for r in mine
        ]
        y = range(len(mine))
        ax = axes[i][0]
        ax.barh(y, [r["p50_ms"] for r in mine], color=colors)
        ax.errorbar(
            [r["p50_ms"] for r in mine],
            y,
            xerr=[[0] * len(mine), [r["p99_ms"] - r["p50_ms"] for r in mine]],
            fmt="none",
            ecolor="black",
            capsize=2,
            lw=0.8,
        )
        ax.set_yticks(list(y), labels, fontsize=6)
        ax.invert_yaxis()
        ax.set_xscale("log")
        ax.set_xlabel("latency at concurrency 1, ms (bar p50, whisker p99; log scale)")
        ax.set_title(model, fontsize=9)
        ax = axes[i][1]
        one = [r["throughput"].get("1") or 0 for r in mine]
        four = [r["throughput"].get("4") or 0 for r in mine]
        ax.barh([k - 0.2 for k in y], one, height=0.4, color=colors, alpha=0.45, label="concurrency 1")
        ax.barh([k + 0.2 for k in y], four, height=0.4, color=colors, label="concurrency 4")
        ax.set_yticks(list(y), labels, fontsize=6)
        ax.invert_yaxis()
        ax.set_xscale("log")
        ax.set_xlabel("requests/s (light: concurrency 1, dark: concurrency 4; log scale)")
        ax.set_title(f"{model}: green in-process, blue TFLiteServer, orange OpenVINOServer, red naive", fontsize=8)
    m = report["machine"]
    fig.suptitle(
        f"{report['date']} - {m['cpu']}, {m['cores']} cores - load avg at start {report['loadavg_start'][0]}",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write(report: dict[str, Any], out: Path, chart_png: bool = True, **kwargs: Any) -> dict[str, Path]:
    chart_png = kwargs.get("chart", chart_png)
    out.mkdir(parents=True, exist_ok=True)
    report["ratios"] = ratios(report["rows"])
    report["targets"] = targets(report["rows"], report["ratios"])
    paths = {"json": out / "bench.json", "md": out / "bench.md"}
    paths["json"].write_text(json.dumps(report, indent=1) + "\n")
    paths["md"].write_text(markdown(report))
    if chart_png:
        paths["png"] = out / "bench.png"
        chart(report, paths["png"])
    return paths


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(
        description="Write bench.md from bench.json again (no measuring), and the generated block of each --doc file"
    )
    parser.add_argument("--results", type=Path, default=Path(__file__).parent / "results" / "bench.json")
    parser.add_argument(
        "--doc", type=Path, action="append", default=[], help="a Markdown file whose results block to rewrite"
    )
    args = parser.parse_args(argv)
    results = args.results.parent
    report = json.loads(args.results.read_text())
    sizes_file = results / "images.json"  # `make image-sizes` measures after the images are built
    if sizes_file.exists():
        report["images"] = json.loads(sizes_file.read_text())
    paths = write(report, results, chart_png=False)
    decode_file = results / "decode.md"
    block = summary(report, decode_file.read_text() if decode_file.exists() else None)
    for doc in args.doc:
        update_doc(doc, block)
    print("wrote " + ", ".join(str(p) for p in [*paths.values(), *args.doc]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
