"""The storage initializer (edgeservers.storage) as the tests run it: the machine's own settings kept out, the
CLI as the init container runs it (with its peak memory), archive bombs, and the objects of a model bucket."""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

import pytest

from tests.support.paths import ROOT
from tests.support.services import LABELS, MODEL, S3Server, make_tar, model_files

MODEL_BYTES = MODEL.read_bytes()
MODEL_SHA = hashlib.sha256(MODEL_BYTES).hexdigest()
SECRET = S3Server.SECRET_KEY
BUCKET = "edge-models"


def isolate(monkeypatch: pytest.MonkeyPatch, **settings: str) -> None:
    """Loopback never through a proxy, no AWS or storage settings from the machine; then `settings`."""
    for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    for name in list(os.environ):
        if name.startswith(("AWS_", "S3_", "STORAGE_MAX_", "STORAGE_CACHE")) or name in (
            "USE_SSL",
            "STORAGE_STALL_TIMEOUT",
        ):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    for name, value in settings.items():
        monkeypatch.setenv(name, value)


@pytest.fixture
def quick_storage(monkeypatch: pytest.MonkeyPatch) -> None:
    """isolate() with retries that do not slow the tests down (STORAGE_TIMEOUT: the stall timeout's older name)."""
    isolate(monkeypatch, STORAGE_RETRIES="2", STORAGE_RETRY_DELAY="0.01", STORAGE_TIMEOUT="10")


def put_models(s3: S3Server) -> S3Server:
    """BUCKET with the model as a prefix, a single key and an archive, next to a stale sibling and a hostile key."""
    s3.put(
        BUCKET,
        {
            "mnv1/model.tflite": MODEL_BYTES,
            "mnv1/meta/labels.txt": LABELS.read_bytes(),
            "mnv1/meta/": b"",  # a "folder" marker, as consoles create them
            "mnv1-old/stale.txt": b"must not be fetched with mnv1/",
            "single/mobilenet.tflite": MODEL_BYTES,
            "archives/model.tar.gz": make_tar(list(model_files().items()), "w:gz"),
            "hostile/../../evil.txt": b"evil",
        },
    )
    return s3


def listing(path: Path) -> list[str]:
    return sorted(p.relative_to(path).as_posix() for p in path.rglob("*"))


def zip_bomb(nbytes: int) -> bytes:
    """One deflated entry of `nbytes` zeros, written in 1 MiB pieces (never whole in memory)."""
    buf = io.BytesIO()
    with (
        zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf,
        zf.open("zeros.bin", "w", force_zip64=True) as entry,
    ):
        for _ in range(nbytes >> 20):
            entry.write(bytes(1 << 20))
    return buf.getvalue()


class Zeros(io.RawIOBase):
    """An endless stream of zeros, for tar members of any size."""

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        b[:] = bytes(len(b))
        return len(b)


def tar_bomb(nbytes: int) -> bytes:
    info = tarfile.TarInfo("zeros.bin")
    info.size = nbytes
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", compresslevel=1) as tf:
        tf.addfile(info, io.BufferedReader(Zeros()))
    return buf.getvalue()


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`python -m edgeservers.storage ARGS`, as the image's ENTRYPOINT runs it in the init container."""
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "edgeservers.storage", *args],
        cwd=ROOT,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def run_cli_measured(*args: str) -> tuple[subprocess.CompletedProcess[str], int]:
    """run_cli, plus the CLI process's own peak RSS in bytes: VmHWM of its own memory map, sampled until it
    exits. (Not rusage: Linux carries the high-water mark across exec, so a child of a large test process
    would report the parent's RSS.)"""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "edgeservers.storage", *args],
            cwd=ROOT,
            stdout=out,
            stderr=err,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            text=True,
        )
        peak_kb = 0
        deadline = time.monotonic() + 120
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                if b"edgeservers.storage" in Path(f"/proc/{proc.pid}/cmdline").read_bytes():  # after exec only
                    status = Path(f"/proc/{proc.pid}/status").read_text()
                    peak_kb = max(peak_kb, int(status.split("\nVmHWM:")[1].split()[0]))
            except (OSError, ValueError, IndexError):
                pass
            time.sleep(0.02)
        proc.wait(timeout=5)
        out.seek(0)
        err.seek(0)
        result = subprocess.CompletedProcess(proc.args, proc.returncode, out.read(), err.read())
    return result, peak_kb * 1024
