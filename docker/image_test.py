#!/usr/bin/env python3
"""`make image-test`: run the built images for real, one arch after the other (arm ones under qemu).

For each arch:
1. a loopback HTTP server serves models/mobilenet_v2_quant as one .tar.gz;
2. the storage-initializer image (read-only root, non-root) fetches it by URL into a directory,
   as the operator's init container does with args ["<model_uri>", "/mnt/models"];
3. the server image runs with the environment the Seldon v1 operator gives the model container
   (PREDICTIVE_UNIT_PARAMETERS with model_uri=/mnt/models, the port variables), `--read-only`,
   the filled directory mounted read-only at /mnt/models;
4. a REST prediction of images/parrot.jpg must answer "macaw" first; then SIGTERM must stop it;
   an INT Seldon cannot parse (8.388608e+06) must stop the image with one line naming the parameter;
5. the same for the -openvino image (OpenVINOServer) on the arches that have one.

Test-harness only (not in the images): `--network host` needs the listeners kept on loopback on a
shared machine, so a sitecustomize shim mounted read-only (PYTHONPATH) makes the wrapper's 0.0.0.0
binds 127.0.0.1, the ports are free ones instead of 9000/6000, and gRPC workers are off (its C core
binds outside Python). Only the standard library: it runs with the host's python3, the repository root
on PYTHONPATH for the tests' harness (tests/support/: `PYTHONPATH=. python3 docker/image_test.py`).
"""

from __future__ import annotations

import argparse
import functools
import http.server
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from tests.support.harness import LOOPBACK_SHIM, free_port, listening_hosts
from tests.support.paths import IMAGES, MOBILENET_V2, ROOT
from tests.support.payloads import multipart

MODEL_DIR = MOBILENET_V2
PHOTO = IMAGES / "parrot.jpg"
START_TIMEOUT = {"native": 120, "qemu": 600}  # cold starts under qemu take minutes


def podman(*args: str, **kw) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.setdefault("CONTAINERS_CONF", str(ROOT / ".cache" / "containers.conf"))
    return subprocess.run(["podman", "--runtime", "runc", *args], env=env, text=True, **kw)


def serve_model(workdir: Path) -> tuple[http.server.ThreadingHTTPServer, str]:
    site = workdir / "site"
    site.mkdir()
    with tarfile.open(site / "mobilenet_v2_quant.tar.gz", "w:gz") as tar:
        for f in sorted(MODEL_DIR.iterdir()):
            tar.add(f, arcname=f.name)

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

    handler = functools.partial(Quiet, directory=str(site))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd, f"http://127.0.0.1:{httpd.server_address[1]}/mobilenet_v2_quant.tar.gz"


def predict(port: int) -> dict:
    content_type, body = multipart({"binData": ("parrot.jpg", PHOTO.read_bytes(), "image/jpeg")})
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/api/v1.0/predictions", data=body, headers={"Content-Type": content_type}
    )
    with urllib.request.urlopen(req, timeout=120) as resp:
        return json.load(resp)


def run_server(arch: str, image: str, models: Path, shim: Path, work: Path, server: str, timeout: int) -> dict:
    """Run one server image as the operator would, classify the parrot, stop it with SIGTERM."""
    result: dict = {}
    http_port, metrics_port, grpc_port = free_port(), free_port(), free_port()
    params = [{"name": "model_uri", "value": "/mnt/models", "type": "STRING"}]
    name = f"edgeservers-image-test-{arch}-{server}-{os.getpid()}"
    env = {
        "PREDICTIVE_UNIT_PARAMETERS": json.dumps(params),
        "PREDICTIVE_UNIT_HTTP_SERVICE_PORT": str(http_port),
        "PREDICTIVE_UNIT_GRPC_SERVICE_PORT": str(grpc_port),
        "PREDICTIVE_UNIT_METRICS_SERVICE_PORT": str(metrics_port),
        "PREDICTIVE_UNIT_ID": "classifier",
        "PREDICTOR_ID": "default",
        "SELDON_DEPLOYMENT_ID": "image-test",
        "PREDICTIVE_UNIT_IMAGE": image,
        "PREDICTOR_LABELS": "{}",
        "GRPC_WORKERS": "0",
        "PYTHONPATH": "/opt/loopback-shim",
    }
    env_args = [a for k, v in env.items() for a in ("-e", f"{k}={v}")]
    t0 = time.monotonic()
    run = podman(
        "run",
        "-d",
        "--name",
        name,
        "--pull=never",
        "--network",
        "host",
        "--read-only",
        "-v",
        f"{models}:/mnt/models:ro",
        "-v",
        f"{shim}:/opt/loopback-shim:ro",
        *env_args,
        image,
        capture_output=True,
    )
    assert run.returncode == 0, run.stderr
    try:
        answer, deadline = None, time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = podman("inspect", "--format", "{{.State.Running}}", name, capture_output=True).stdout.strip()
            assert state == "true", (
                "server container exited:\n" + podman("logs", name, capture_output=True).stderr[-3000:]
            )
            try:
                answer = predict(http_port)
                break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(2)
        result["first_prediction_s"] = round(time.monotonic() - t0, 1)
        assert answer is not None, f"no answer within {timeout} s"
        top = answer["jsonData"][0]
        print(f"[{arch}] {server}: first prediction after {result['first_prediction_s']} s: {top}")
        assert top["label"] == "macaw", answer
        result["top1"] = top["label"]
        t1 = time.monotonic()
        predict(http_port)
        result["warm_prediction_s"] = round(time.monotonic() - t1, 2)
        bound = listening_hosts(http_port) | listening_hosts(metrics_port)
        assert bound and all(a in ("127.0.0.1", "::1") for a in bound), bound
        user = server_uid(name)
        assert user == "8888", user
        t2 = time.monotonic()
        podman("stop", "--time", "30", name, capture_output=True)
        result["stop_s"] = round(time.monotonic() - t2, 1)
        print(f"[{arch}] {server}: SIGTERM -> stopped in {result['stop_s']} s")
        assert result["stop_s"] < 10, "SIGTERM did not stop the server promptly"
    finally:
        logs = podman("logs", name, capture_output=True)
        (work.parent / f"server-{arch}-{server}.log").write_text(logs.stdout + logs.stderr)
        podman("rm", "-f", name, capture_output=True)
    model_name = podman(
        "image", "inspect", "--format", "{{range .Config.Env}}{{println .}}{{end}}", image, capture_output=True
    ).stdout
    assert f"MODEL_NAME={server}" in model_name.split(), f"{image} does not default to {server}"
    return result


def bad_parameter_line(image: str, server: str) -> str:
    """The image's entrypoint with an INT Seldon cannot parse: it must stop with one line naming it."""
    params = [
        {"name": "model_uri", "value": "/mnt/models", "type": "STRING"},
        {"name": "max_request_bytes", "value": "8.388608e+06", "type": "INT"},
    ]
    env = f"PREDICTIVE_UNIT_PARAMETERS={json.dumps(params)}"
    run = podman("run", "--rm", "--pull=never", "--read-only", "-e", env, image, capture_output=True)
    expected = f"{server}: parameter max_request_bytes: '8.388608e+06' is not an INT (write it in digits: 8388608)"
    lines = run.stderr.strip().splitlines()
    assert run.returncode != 0 and lines and lines[-1] == expected and "Traceback" not in run.stderr, run.stderr[-3000:]
    return lines[-1]


def server_uid(name: str) -> str:
    """The real uid of the container's main process, read on the host (the image has no `id`)."""
    pid = podman("inspect", "--format", "{{.State.Pid}}", name, capture_output=True).stdout.strip()
    status = Path(f"/proc/{pid}/status").read_text()
    return next(line.split()[1] for line in status.splitlines() if line.startswith("Uid:"))


def image_size_mb(image: str) -> int | None:
    size = podman("image", "inspect", "--format", "{{.Size}}", image, capture_output=True).stdout.strip()
    return round(int(size) / 1e6) if size.isdigit() else None


def test_arch(arch: str, version: str, repo: str, init_repo: str, work: Path, openvino: bool, timeout: int) -> dict:
    result = {"arch": arch}
    image, init_image = f"{repo}:{version}-{arch}", f"{init_repo}:{version}-{arch}"
    httpd, url = serve_model(work)
    models = work / "models"
    models.mkdir()
    models.chmod(0o777)  # the initializer runs as uid 8888, like an emptyDir any uid can write
    shim = LOOPBACK_SHIM
    try:
        t0 = time.monotonic()
        init = podman(
            "run",
            "--rm",
            "--pull=never",
            "--network",
            "host",
            "--read-only",
            "-v",
            f"{models}:/mnt/models",
            init_image,
            url,
            "/mnt/models",
            capture_output=True,
        )
        result["init_s"] = round(time.monotonic() - t0, 1)
        print(
            f"[{arch}] initializer: exit {init.returncode} in {result['init_s']} s: {init.stdout.strip()} {init.stderr.strip()}"
        )
        files = sorted(p.name for p in models.iterdir())
        assert init.returncode == 0 and "labels.txt" in files and any(f.endswith(".tflite") for f in files), files

        result.update(run_server(arch, image, models, shim, work, "TFLiteServer", timeout))
        print(f"[{arch}] a bad parameter stops the server with: {bad_parameter_line(image, 'TFLiteServer')}")
        if openvino:  # the -openvino image: the server plus OpenVINO, OpenVINOServer by default
            ov_image = f"{repo}:{version}-openvino-{arch}"
            ov = run_server(arch, ov_image, models, shim, work, "OpenVINOServer", timeout)
            result.update({f"openvino_{k}": v for k, v in ov.items()})
            result["openvino_size_mb"] = image_size_mb(ov_image)
    finally:
        httpd.shutdown()
    result["size_mb"] = image_size_mb(image)
    result["init_size_mb"] = image_size_mb(init_image)
    return result


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument(
        "arches", nargs="+", help="image tag suffixes: amd64 arm64 armv7 (docker/images.sh test passes them)"
    )
    ap.add_argument("--version", required=True)
    ap.add_argument("--host-arch", required=True, help="the arch that runs natively; the others run under qemu")
    ap.add_argument("--openvino-arches", default="", help="space-separated arches that also have an -openvino image")
    ap.add_argument("--repo", default="localhost/edgeservers")
    ap.add_argument("--init-repo", default="localhost/edgeservers-storage-initializer")
    args = ap.parse_args()
    out = ROOT / "build" / "image-test"
    out.mkdir(parents=True, exist_ok=True)
    passed, failed, results = 0, 0, []
    for arch in args.arches:
        with tempfile.TemporaryDirectory(dir=out) as tmp:
            try:
                t0 = time.monotonic()
                timeout = START_TIMEOUT["native" if arch == args.host_arch else "qemu"]
                results.append(
                    test_arch(
                        arch,
                        args.version,
                        args.repo,
                        args.init_repo,
                        Path(tmp),
                        arch in args.openvino_arches.split(),
                        timeout,
                    )
                )
                results[-1]["test_s"] = round(time.monotonic() - t0)
                passed += 1
                print(f"[{arch}] PASS")
            except Exception as exc:  # noqa: BLE001 - one line per failed arch, then the summary
                failed += 1
                results.append({"arch": arch, "error": str(exc)[-2000:]})
                print(f"[{arch}] FAIL: {exc}")
    (out / "results.json").write_text(json.dumps(results, indent=2))
    for r in results:
        print(json.dumps(r))
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
