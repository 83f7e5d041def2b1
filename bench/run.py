"""`make bench`: the servers against the runtime's own speed and the naive server, in one run.

    .venv/bin/python -m bench.run [--smoke] [--out DIR] [--models mobilenet_v2,...]

Writes DIR/bench.json, DIR/bench.md and DIR/bench.png (DIR defaults to bench/results) and prints
the Markdown. Every number comes with the load average of the machine when it was taken.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from bench import defaults, load
from bench.launcher import Server
from bench.limits import Limits
from tests.support import memory
from tests.support.paths import MODELS, ROOT, image_bytes
from tests.support.payloads import rest_image

CONCURRENCY = (1, 2, 4, 8)


@dataclass(frozen=True)
class Model:
    key: str
    dir: Path
    image: str
    params: dict[str, Any] = field(default_factory=dict)


ALL_MODELS = {
    m.key: m
    for m in (
        Model("mobilenet_v2_quant", MODELS / "mobilenet_v2_quant", "parrot.jpg"),
        Model("mobilenet_v1_025_quant", MODELS / "mobilenet_v1_025_quant", "parrot.jpg"),
        Model("face_mask", MODELS / "face_mask", "face_mask_demo.jpg", {"postprocess": "detection"}),
    )
}


@dataclass(frozen=True)
class Config:
    """How a server (and its in-process limit) spends the cores: interpreters x threads, and Seldon's workers."""

    name: str
    num_threads: int
    pool_size: int
    env: dict[str, str] = field(default_factory=dict)

    def describe(self) -> str:
        env = " ".join(f"{k}={v}" for k, v in self.env.items())
        return f"num_threads={self.num_threads} pool_size={self.pool_size}" + (f" {env}" if env else "")


# The configuration of the main matrix: what docs/benchmarks.md recommends for a 2-core node.
MAIN = Config("2-core", num_threads=1, pool_size=2, env={"GUNICORN_THREADS": "2", "GRPC_THREADS": "2"})
# The naive baseline as the tutorial runs it: Seldon's defaults (one gunicorn worker, one thread, one gRPC
# worker and thread). Its one interpreter is shared and unlocked: with GUNICORN_THREADS>1 concurrent requests
# fail, which is why the tutorial keeps one thread. num_threads as in MAIN, so latency compares like with like.
NAIVE = Config("naive", num_threads=MAIN.num_threads, pool_size=1)
# The settings sweep (mobilenet_v2, REST JPEG): from the shipped defaults to more processes.
SWEEP = (
    Config("defaults", num_threads=os.cpu_count() or 1, pool_size=1),
    Config("1x2 threads", num_threads=2, pool_size=1, env={"GUNICORN_THREADS": "4", "GRPC_THREADS": "4"}),
    MAIN,
    Config("2 workers", num_threads=1, pool_size=1, env={"GUNICORN_WORKERS": "2", "GRPC_WORKERS": "2"}),
    # The smallest tree: REST only (no gRPC worker holding a second copy of the model), one interpreter.
    Config("REST only", num_threads=2, pool_size=1, env={"GRPC_WORKERS": "0"}),
)


@dataclass(frozen=True)
class Budget:
    """Request counts and time caps per case (a case stops at whichever comes first)."""

    latency_requests: int = 100  # concurrency 1: p50/p90/p99 and throughput at 1
    latency_cap_s: float = 7.0
    load_requests: int = 60  # each of concurrency 2, 4, 8
    load_cap_s: float = 5.0


FULL = Budget()
SMOKE = Budget(latency_requests=4, latency_cap_s=5.0, load_requests=4, load_cap_s=5.0)


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def measure(make_client: Callable[[], Any], budget: Budget, concurrency: tuple[int, ...]) -> dict[str, Any]:
    """Latency at concurrency 1 and throughput at each concurrency, with the load average."""
    result: dict[str, Any] = {"loadavg_before": loadavg(), "runs": []}
    for c in concurrency:
        if c == 1:
            run = load.drive(make_client, 1, budget.latency_requests, budget.latency_cap_s, warmup=3)
        else:
            run = load.drive(make_client, c, budget.load_requests, budget.load_cap_s, warmup=1)
        result["runs"].append(run.summary())
    result["loadavg_after"] = loadavg()
    first = result["runs"][0]
    result.update({k: first.get(k) for k in ("p50_ms", "p90_ms", "p99_ms")})
    result["throughput"] = {str(r["concurrency"]): r["throughput_rps"] for r in result["runs"]}
    result["errors"] = sum(r["errors"] for r in result["runs"])
    return result


# --- what is measured ---------------------------------------------------------------------------


def payloads(limits: Limits, model: Model) -> dict[str, tuple[str, bytes]]:
    """case -> (protocol, pre-encoded request) for the model's image and the tensor the server makes of it.

    Protocols: "rest" / "grpc" (Seldon v1), "oip_rest:<model>" (the Open Inference Protocol's binary
    tensor data extension; the body starts with its header length and a newline) and "oip_grpc".
    """
    jpeg = image_bytes(model.image)
    tensor = limits.image_tensor(jpeg)
    name, input_name = limits.model_path.stem, limits.signature.inputs[0].name
    # Like for like with v1: where v1 answers a tensor with the post-processed answer only (postprocess set
    # explicitly), OIP asks for the `answer` output only; else both answer the raw outputs.
    answer_only = ["answer"] if model.params.get("postprocess", "auto") not in ("auto", "none") else None
    oip_body, oip_headers = load.oip_rest_binary(tensor, input_name, answer_only)
    return {
        "rest_image": ("rest", rest_image(jpeg)),
        "rest_ndarray": ("rest", load.rest_ndarray(tensor)),
        "rest_tftensor": ("rest", load.rest_tftensor(tensor)),
        "oip_rest_binary": (f"oip_rest:{name}", oip_headers[load.OIP_HEADER].encode() + b"\n" + oip_body),
        "grpc_image": ("grpc", load.grpc_image(jpeg)),
        "grpc_tftensor": ("grpc", load.grpc_tftensor(tensor)),
        "grpc_tensor": ("grpc", load.grpc_tensor(tensor)),
        "oip_grpc": ("oip_grpc", load.oip_grpc(tensor, name, input_name, answer_only)),
    }


def client_factory(server: Server, protocol: str, body: bytes) -> Callable[[], Any]:
    if protocol == "rest":
        return lambda: load.RestClient(server.http_port, body)
    if protocol.startswith("oip_rest:"):
        length, payload = body.split(b"\n", 1)
        headers = {load.OIP_HEADER: length.decode(), "Content-Type": "application/octet-stream"}
        path = f"/v2/models/{protocol.split(':', 1)[1]}/infer"
        return lambda: load.RestClient(server.http_port, payload, path, headers)
    if protocol == "oip_grpc":
        return lambda: load.GrpcClient(server.grpc_port, body, load.OIP_INFER_METHOD)
    return lambda: load.GrpcClient(server.grpc_port, body)


def answering(protocol: str, body: bytes) -> Callable[[Server], bool]:
    """A server's readiness: it answers one request of `protocol` with `body`."""

    def ready(server: Server) -> bool:
        client = client_factory(server, protocol, body)()
        try:
            return client()[0]
        finally:
            client.close()

    return ready


def first_answer(server: Server, protocol: str, body: bytes) -> str:
    client = client_factory(server, protocol, body)()
    try:
        ok, data = client()
        assert ok, f"{protocol} request failed: {data[:300]!r}"
        if protocol.startswith("oip_rest:"):
            return load.check_oip_rest(data)
        if protocol == "oip_grpc":
            return load.check_oip_grpc(data)
        return load.check_rest(data) if protocol == "rest" else load.check_grpc(data)
    finally:
        client.close()


def bench_server(
    interface: str,
    runtime: str,
    model: Model,
    params: dict[str, Any],
    config: Config,
    cases: dict[str, tuple[str, bytes]],
    budget: Budget,
    concurrency: tuple[int, ...],
    label: str,
) -> list[dict[str, Any]]:
    ready = answering(*(cases.get("rest_image") or next(iter(cases.values()))))
    server = Server(
        interface,
        {
            **params,
            "num_threads": config.num_threads,
            **({"pool_size": config.pool_size} if interface != "bench.naive_server.NaiveServer" else {}),
        },
        config.env,
    )

    la = loadavg()
    server.start(ready)
    rows = []
    try:
        # Warm up every worker of both protocols before the memory is read.
        for protocol, body in cases.values():
            for _ in range(3):
                client_factory(server, protocol, body)()()
        time.sleep(0.5)
        memory = server.memory()
        print(f"  {label} {model.key}: cold start {server.cold_start_s:.2f} s, {memory}", flush=True)
        for case, (protocol, body) in cases.items():
            answer = first_answer(server, protocol, body)
            result = measure(client_factory(server, protocol, body), budget, concurrency)
            rows.append(
                {
                    "model": model.key,
                    "target": label,
                    "runtime": runtime,
                    "case": case,
                    "config": config.describe(),
                    "answer": answer,
                    "cold_start_s": round(server.cold_start_s or 0.0, 2),
                    "cold_start_loadavg": la,
                    "memory": memory,
                    **result,
                }
            )
            print(
                f"    {case:14s} p50 {result['p50_ms']} ms, throughput {result['throughput']}, errors {result['errors']}, "
                f"load {result['loadavg_before'][0]}",
                flush=True,
            )
        alive = server.proc is not None and server.proc.poll() is None
        for row in rows:
            row["server_alive_after"] = alive
    finally:
        server.stop()
    return rows


def bench_limits(
    runtime: str, model: Model, params: dict[str, Any], config: Config, budget: Budget, concurrency: tuple[int, ...]
) -> tuple[Limits, list[dict[str, Any]]]:
    limits = Limits(
        runtime,
        {**params, "model_uri": str(model.dir), "num_threads": config.num_threads, "pool_size": config.pool_size},
    )
    jpeg = image_bytes(model.image)
    rows = []
    for case, factory in (("invoke", limits.invoke(limits.image_tensor(jpeg))), ("pipeline", limits.pipeline(jpeg))):
        result = measure(factory, budget, concurrency)
        rows.append(
            {
                "model": model.key,
                "target": f"in-process {runtime}",
                "runtime": runtime,
                "case": case,
                "config": config.describe(),
                **result,
            }
        )
        print(
            f"    in-process {runtime} {case:9s} p50 {result['p50_ms']} ms, throughput {result['throughput']}",
            flush=True,
        )
    return limits, rows


# --- the run ------------------------------------------------------------------------------------


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for dist in (
        "seldon-core",
        "ai-edge-litert",
        "openvino",
        "numpy",
        "opencv-python-headless",
        "protobuf",
        "grpcio",
        "gunicorn",
        "Flask",
    ):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "not installed"
    from google.protobuf.internal import api_implementation

    out["protobuf_implementation"] = api_implementation.Type()
    return out


def source() -> dict[str, Any]:
    """The commit measured, and whether the server code differed from it (the tree may be shared)."""
    import subprocess

    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    changed = git(
        "status", "--porcelain", "--", "edgeservers", "TFLiteServer.py", "OpenVINOServer.py", "requirements.txt"
    )
    return {"commit": git("rev-parse", "--short", "HEAD") or "unknown", "server_code_changed": changed.splitlines()}


def machine() -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_kb = 0
    try:
        mem_kb = int(Path("/proc/meminfo").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_mb": mem_kb // 1024,
        "kernel": platform.release(),
        "arch": platform.machine(),
    }


# Memory per configuration (bench/memory.py): server, configuration of bench.memory.CONFIGS.
MEMORY_CASES = (("TFLiteServer", "defaults"), ("TFLiteServer", "threads8"), ("OpenVINOServer", "defaults"))
IMAGE_SIZES = ROOT / "bench" / "results" / "images.json"  # written by `make image-sizes`


def memory_per_configuration() -> list[dict[str, Any]]:
    rows = []
    for interface, config in MEMORY_CASES:
        print(f"memory: {interface}, {config}", flush=True)
        m = memory.measure(interface, config)
        rows.append(
            {
                "server": interface,
                "config": config,
                "env": m["env"],
                "processes": len(m["processes"]),
                "alone_pss_mb": m["alone_pss_mb"],
                "pss_mb": m["pss_mb"],
                "anon_mb": round(m["total"]["Pss_Anon"] / 1024, 1),
                "loadavg": loadavg()[0],
            }
        )
    return rows


def image_sizes() -> dict[str, Any] | None:
    """The sizes `make image-sizes` measured (images are not built by `make bench`), with when and at which commit."""
    try:
        return json.loads(IMAGE_SIZES.read_text())
    except (OSError, ValueError):
        return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="a few requests per case, one model, a few cases")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--models", default="", help="comma-separated subset of " + ", ".join(ALL_MODELS))
    parser.add_argument("--no-openvino", action="store_true")
    parser.add_argument("--no-sweep", action="store_true")
    parser.add_argument(
        "--cases", default="", help="comma-separated subset of the server payloads (e.g. grpc_tftensor,oip_grpc)"
    )
    parser.add_argument("--no-naive", action="store_true")
    args = parser.parse_args(argv)

    budget = SMOKE if args.smoke else FULL
    concurrency = (1, 2) if args.smoke else CONCURRENCY
    keys = [k for k in args.models.split(",") if k] or (["mobilenet_v1_025_quant"] if args.smoke else list(ALL_MODELS))
    models = [ALL_MODELS[k] for k in keys]
    runtimes = ["tflite"] if args.smoke or args.no_openvino else ["tflite", "openvino"]
    started = time.time()
    report: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "mode": "smoke" if args.smoke else "full",
        "machine": machine(),
        "versions": versions(),
        "source": source(),
        "budget": {**budget.__dict__, "concurrency": list(concurrency)},
        "config": MAIN.describe(),
        "loadavg_start": loadavg(),
        "rows": [],
        "sweep": [],
    }
    print(
        f"bench ({report['mode']}): {report['machine']['cpu']}, {report['machine']['cores']} cores, load {report['loadavg_start']}",
        flush=True,
    )
    rows = report["rows"]
    for model in models:
        print(f"{model.key}", flush=True)
        params = {"model_uri": str(model.dir), **model.params}
        for runtime in runtimes:
            limits, limit_rows = bench_limits(runtime, model, model.params, MAIN, budget, concurrency)
            rows += limit_rows
            cases = payloads(limits, model)
            if args.smoke:
                cases = {
                    k: cases[k]
                    for k in (
                        "rest_image",
                        "rest_ndarray",
                        "rest_tftensor",
                        "grpc_tftensor",
                        "oip_rest_binary",
                        "oip_grpc",
                    )
                }
            if args.cases:
                cases = {k: cases[k] for k in args.cases.split(",") if k in cases}
            interface = "TFLiteServer" if runtime == "tflite" else "OpenVINOServer"
            rows += bench_server(interface, runtime, model, params, MAIN, cases, budget, concurrency, interface)
            if (
                runtime == "tflite"
                and model.params.get("postprocess") == "detection"
                and not args.smoke
                and not args.cases
            ):
                # The same model with raw outputs: the like-for-like answer to the naive server's.
                raw = {k: cases[k] for k in ("rest_ndarray", "grpc_tftensor")}
                # Concurrency 1 and 4 only: a raw multi-output answer over gRPC takes seconds (see docs/benchmarks.md).
                rows += bench_server(
                    interface,
                    runtime,
                    model,
                    {**params, "postprocess": "none"},
                    MAIN,
                    raw,
                    budget,
                    (1, 4),
                    "TFLiteServer raw outputs",
                )
            if runtime == "tflite" and not args.no_naive and "rest_ndarray" in cases:
                naive_cases = {"rest_ndarray": cases["rest_ndarray"]}
                rows += bench_server(
                    "bench.naive_server.NaiveServer",
                    "tflite",
                    model,
                    {"model_uri": str(model.dir)},
                    NAIVE,
                    naive_cases,
                    budget,
                    concurrency,
                    "naive",
                )
    if not args.smoke and not args.no_sweep:
        model = ALL_MODELS["mobilenet_v2_quant"]
        print("settings sweep: mobilenet_v2_quant, REST JPEG", flush=True)
        jpeg = image_bytes(model.image)
        for config in SWEEP:
            limits, limit_rows = bench_limits("tflite", model, model.params, config, budget, (1, 4))
            for r in limit_rows:
                r["sweep"] = config.name
            report["sweep"] += [r for r in limit_rows if r["case"] == "pipeline"]
            for r in bench_server(
                "TFLiteServer",
                "tflite",
                model,
                {"model_uri": str(model.dir)},
                config,
                {"rest_image": ("rest", rest_image(jpeg))},
                budget,
                (1, 4),
                "TFLiteServer",
            ):
                r["sweep"] = config.name
                report["sweep"].append(r)
    if not args.smoke:
        report["memory"] = memory_per_configuration()
        print("defaults: the shipped defaults against in-process (bench.defaults)", flush=True)
        report["defaults"] = defaults.measure()
    report["images"] = image_sizes()
    report["loadavg_end"] = loadavg()
    report["source_end"] = source()
    report["duration_s"] = round(time.time() - started, 1)

    from bench.report import write

    paths = write(report, args.out, chart=not args.smoke)
    print(Path(paths["md"]).read_text())
    print("wrote " + ", ".join(str(p) for p in paths.values()), flush=True)
    errors = sum(r.get("errors", 0) for r in rows + report["sweep"])
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
