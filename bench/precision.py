"""OpenVINO's inference_precision: speed of `auto` against `f32`, and what lower precisions cost in accuracy.

    .venv/bin/python -m bench.precision [--out DIR] [--smoke]

Speed: the in-process runtime (`invoke()` alone) and OpenVINOServer (REST JPEG), per precision, with the
main bench's 2-core configuration. Accuracy: the answers for the test photos against TFLiteServer (f32),
for `f32`, `auto`, and the model with every tensor rounded to bf16 or f16 (tests/support/precision.py), which
shows on any CPU what a bf16 or f16 device changes. Writes DIR/precision.json (DIR defaults to bench/results) and
prints a Markdown table. On a CPU without AMX, avx512_bf16 or fp16 arithmetic `auto` is f32.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import openvino as ov

from bench.run import ALL_MODELS, FULL, MAIN, SMOKE, Model, bench_limits, bench_server, loadavg, machine
from tests.support.paths import ROOT, image_bytes, tflite_file
from tests.support.payloads import b64, rest_image
from tests.support.precision import rounded_model_dir

PRECISIONS = ("f32", "auto")
ROUNDED = ("bf16", "f16")
PHOTOS = {
    "mobilenet_v2_quant": ("parrot.jpg", "cat.bmp", "grace_hopper.bmp", "bird.bmp"),
    "face_mask": ("face_mask_demo.jpg", "grace_hopper.bmp"),
}


def _answers(server_class: type, params: dict[str, Any], photos: tuple[str, ...]) -> dict[str, Any]:
    """The server's answers to the photos, in process (the same component the microservice runs)."""
    server = server_class(**params)
    server.load()
    return {p: server.predict_raw({"binData": b64(image_bytes(p))})["jsonData"] for p in photos}


def accuracy(model: Model, variants: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Per variant: are the top-1 / detected labels TFLite's, and how far are the scores and boxes."""
    from OpenVINOServer import OpenVINOServer
    from TFLiteServer import TFLiteServer

    photos = PHOTOS[model.key]
    reference = _answers(TFLiteServer, {"model_uri": str(model.dir), **model.params}, photos)
    rows = []
    for name, params in variants.items():
        got = _answers(OpenVINOServer, {**model.params, **params}, photos)
        same_labels, score_diff, box_diff = True, 0.0, 0
        for photo in photos:
            want, have = reference[photo], got[photo]
            if model.params.get("postprocess") != "detection":
                want, have = want[:1], have[:1]
            same_labels &= [a["label"] for a in want] == [a["label"] for a in have]
            for a, b in zip(want, have):
                score_diff = max(score_diff, abs(a["score"] - b["score"]))
                if "box" in a:
                    box_diff = max(box_diff, int(np.abs(np.subtract(a["box"], b["box"])).max()))
        rows.append(
            {
                "model": model.key,
                "variant": name,
                "photos": len(photos),
                "same_labels": same_labels,
                "max_score_diff": round(score_diff, 4),
                "max_box_diff_px": box_diff,
            }
        )
    return rows


def compiled_precision(precision: str) -> str:
    """What the CPU plugin reports after compiling the face-mask detector with this inference_precision."""
    core = ov.Core()
    tflite = tflite_file(ALL_MODELS["face_mask"].dir)
    config = {} if precision == "auto" else {"INFERENCE_PRECISION_HINT": precision}
    return (
        core.compile_model(core.read_model(str(tflite)), "CPU", config)
        .get_property("INFERENCE_PRECISION_HINT")
        .get_type_name()
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--smoke", action="store_true", help="a few requests per case")
    args = parser.parse_args(argv)
    budget = SMOKE if args.smoke else FULL
    core = ov.Core()
    report: dict[str, Any] = {
        "machine": machine(),
        "cpu_inference_precision_hint": core.get_property("CPU", "INFERENCE_PRECISION_HINT").get_type_name(),
        "cpu_capabilities": core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"),
        "compiled_precision": {p: compiled_precision(p) for p in PRECISIONS},
        "config": MAIN.describe(),
        "loadavg_start": loadavg(),
        "speed": [],
        "accuracy": [],
    }
    with tempfile.TemporaryDirectory() as scratch:
        for key in PHOTOS:
            model = ALL_MODELS[key]
            print(model.key, flush=True)
            jpeg = image_bytes(model.image)
            for precision in PRECISIONS:
                params = {**model.params, "inference_precision": precision}
                _, rows = bench_limits("openvino", model, params, MAIN, budget, (1,))
                rows += bench_server(
                    "OpenVINOServer",
                    "openvino",
                    model,
                    {"model_uri": str(model.dir), **params},
                    MAIN,
                    {"rest_image": ("rest", rest_image(jpeg))},
                    budget,
                    (1,),
                    "OpenVINOServer",
                )
                report["speed"] += [{**r, "inference_precision": precision} for r in rows]
            variants = {p: {"model_uri": str(model.dir), "inference_precision": p} for p in PRECISIONS}
            for p in ROUNDED:
                target = Path(scratch) / f"{key}_{p}"
                target.mkdir()
                variants[f"every tensor rounded to {p}"] = {"model_uri": str(rounded_model_dir(model.dir, p, target))}
            report["accuracy"] += accuracy(model, variants)
    report["loadavg_end"] = loadavg()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "precision.json").write_text(json.dumps(report, indent=2))
    print(markdown(report))
    return 0


def markdown(report: dict[str, Any]) -> str:
    lines = [
        f"CPU: {report['machine']['cpu']}, INFERENCE_PRECISION_HINT {report['cpu_inference_precision_hint']}, "
        f"capabilities {', '.join(report['cpu_capabilities'])}; compiled as "
        + ", ".join(f"{p} -> {c}" for p, c in report["compiled_precision"].items())
        + f"; {report['config']}; "
        f"load average {report['loadavg_start']} -> {report['loadavg_end']}",
        "",
        "| model | inference_precision | `invoke()` p50 ms | in-process pipeline p50 ms | OpenVINOServer REST JPEG p50 ms |",
        "|---|---|---:|---:|---:|",
    ]
    for key in PHOTOS:
        for precision in PRECISIONS:
            cells = {
                r["case"]: r["p50_ms"]
                for r in report["speed"]
                if r["model"] == key and r["inference_precision"] == precision
            }
            lines.append(
                f"| {key} | {precision} | {cells.get('invoke')} | {cells.get('pipeline')} | {cells.get('rest_image')} |"
            )
    lines += [
        "",
        "| model | OpenVINO | photos | labels as TFLite | max score difference | max box difference (px) |",
        "|---|---|---:|---|---:|---:|",
    ]
    for r in report["accuracy"]:
        lines.append(
            f"| {r['model']} | {r['variant']} | {r['photos']} | {'yes' if r['same_labels'] else 'no'} | "
            f"{r['max_score_diff']} | {r['max_box_diff_px'] if r['model'] == 'face_mask' else ''} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
