"""`make bench-oip`: the Open Inference Protocol's tensor paths against v1's tftensor paths and invoke(), interleaved.

    .venv/bin/python -m bench.interleaved [--rounds N] [--out DIR] [--models ...] [--no-openvino]

On a shared machine the load drifts during a run, and cases measured one after another (as `make bench`
does) compare different moments. Here every round makes one request of each case, in a shuffled order,
on one started server, plus one in-process `invoke()`: the medians compare like with like. Concurrency 1,
tensors of the model's image as the server's pre-processing makes them. Writes DIR/interleaved.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.launcher import Server
from bench.limits import Limits
from bench.run import (
    ALL_MODELS,
    MAIN,
    answering,
    client_factory,
    first_answer,
    loadavg,
    machine,
    payloads,
    source,
    versions,
)
from tests.support.paths import ROOT, image_bytes

CASES = ("invoke", "rest_tftensor", "oip_rest_binary", "grpc_tftensor", "oip_grpc")
TEXT = {
    "invoke": "in-process invoke()",
    "rest_tftensor": "v1 REST data.tftensor",
    "oip_rest_binary": "OIP REST binary",
    "grpc_tftensor": "v1 gRPC data.tftensor",
    "oip_grpc": "OIP gRPC raw",
}


def run_one(runtime: str, model_key: str, rounds: int) -> dict[str, Any]:
    model = ALL_MODELS[model_key]
    params = {**model.params, "model_uri": str(model.dir), "num_threads": MAIN.num_threads, "pool_size": MAIN.pool_size}
    limits = Limits(runtime, params)
    cases = {k: v for k, v in payloads(limits, model).items() if k in CASES}
    jpeg = image_bytes(model.image)
    invoke = limits.invoke(limits.image_tensor(jpeg))()
    interface = "TFLiteServer" if runtime == "tflite" else "OpenVINOServer"
    server = Server(interface, params, MAIN.env)
    la = loadavg()
    server.start(answering(*cases["oip_grpc"]))
    try:
        clients = {k: client_factory(server, p, b)() for k, (p, b) in cases.items()}
        clients["invoke"] = invoke
        answers = {k: first_answer(server, p, b) for k, (p, b) in cases.items()}
        for _ in range(3):  # warm-up
            for c in clients.values():
                c()
        times: dict[str, list[float]] = {k: [] for k in clients}
        errors = 0
        order = list(clients)
        for _ in range(rounds):
            random.shuffle(order)
            for k in order:
                t0 = time.perf_counter()
                ok, _ = clients[k]()
                dt = time.perf_counter() - t0
                if ok:
                    times[k].append(dt * 1000.0)
                else:
                    errors += 1
        for c in clients.values():
            c.close()
    finally:
        server.stop()
    p50 = {k: round(float(np.median(v)), 3) for k, v in times.items() if v}
    return {
        "model": model_key,
        "runtime": runtime,
        "server": interface,
        "rounds": rounds,
        "errors": errors,
        "loadavg_before": la,
        "loadavg_after": loadavg(),
        "p50_ms": p50,
        "answers": answers,
        "ratios": {
            "oip_rest_binary / rest_tftensor": round(p50["oip_rest_binary"] / p50["rest_tftensor"], 2),
            "oip_rest_binary / grpc_tftensor": round(p50["oip_rest_binary"] / p50["grpc_tftensor"], 2),
            "oip_grpc / grpc_tftensor": round(p50["oip_grpc"] / p50["grpc_tftensor"], 2),
            "oip_rest_binary / invoke": round(p50["oip_rest_binary"] / p50["invoke"], 2),
            "oip_grpc / invoke": round(p50["oip_grpc"] / p50["invoke"], 2),
            "grpc_tftensor / invoke": round(p50["grpc_tftensor"] / p50["invoke"], 2),
        },
    }


def markdown(report: dict[str, Any]) -> str:
    lines = [
        "# OIP against v1 tftensor, interleaved (concurrency 1)",
        "",
        f"- Date: {report['date']}; {report['machine']['cpu']}, {report['machine']['cores']} cores; commit {report['source']['commit']}",
        f"- Server configuration: {MAIN.describe()}; {report['rounds']} rounds, each one request of every case in a shuffled order",
        "- Load average (1 min) before/after each server in the table: the machine is shared.",
        "",
        "| model | server | "
        + " | ".join(f"{TEXT[c]} p50 ms" for c in CASES)
        + " | OIP REST / v1 REST | OIP REST / v1 gRPC | OIP gRPC / v1 gRPC | OIP REST / invoke | OIP gRPC / invoke | errors | load |",
        "|---|---|" + "---:|" * (len(CASES) + 7),
    ]
    for r in report["results"]:
        x = r["ratios"]
        lines.append(
            f"| {r['model']} | {r['server']} | "
            + " | ".join(str(r["p50_ms"].get(c, "-")) for c in CASES)
            + f" | {x['oip_rest_binary / rest_tftensor']} | {x['oip_rest_binary / grpc_tftensor']} | {x['oip_grpc / grpc_tftensor']}"
            + f" | {x['oip_rest_binary / invoke']} | {x['oip_grpc / invoke']} | {r['errors']} | {r['loadavg_before'][0]} / {r['loadavg_after'][0]} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "oip")
    parser.add_argument("--models", default=",".join(ALL_MODELS))
    parser.add_argument("--no-openvino", action="store_true")
    args = parser.parse_args(argv)
    import datetime

    report: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "versions": versions(),
        "source": source(),
        "rounds": args.rounds,
        "results": [],
    }
    for key in [k for k in args.models.split(",") if k]:
        for runtime in ["tflite"] + ([] if args.no_openvino else ["openvino"]):
            result = run_one(runtime, key, args.rounds)
            print(f"{key} {runtime}: p50 {result['p50_ms']} ratios {result['ratios']}", flush=True)
            report["results"].append(result)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "interleaved.json").write_text(json.dumps(report, indent=1) + "\n")
    text = markdown(report)
    (args.out / "interleaved.md").write_text(text)
    print(text)
    return 1 if any(r["errors"] for r in report["results"]) else 0


if __name__ == "__main__":
    raise SystemExit(main())
