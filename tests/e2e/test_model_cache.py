"""The node-local model cache (edgeservers/storage/cache.py) against real outages: the S3 server (moto)
stopped, a port that accepts and never answers (a TCP Gate in blackhole mode in front of S3), HTTP 503
from the local web server, a connection cut half-way through a body. The initializer runs as the init
container runs it (the CLI as a subprocess), twice against one cache directory: online, then offline.
A server then starts from the cache with its source down and says where its model came from."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from edgeservers.storage import ModelCache, StorageError, provenance, provide
from edgeservers.storage.common import Limits
from tests.support.paths import MOBILENET_V2
from tests.support.services import FileServer, Gate, S3Server, tar_dir, tree
from tests.support.storage import MODEL_BYTES, isolate, run_cli

MANIFEST = ".edgeservers-model.json"
BUCKET = "cached-models"
CONNECT_TIMEOUT = 2  # seconds; the default is 5
HANG_BOUND = 20  # "does not hang": far above any wait the initializer may make here, never a timing claim


@pytest.fixture(autouse=True)
def isolated(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fast retries, a short connect timeout, loopback never through a proxy, no AWS settings from the machine."""
    isolate(monkeypatch, STORAGE_RETRIES="1", STORAGE_RETRY_DELAY="0.01", STORAGE_CONNECT_TIMEOUT=str(CONNECT_TIMEOUT))


@pytest.fixture(scope="module")
def s3(s3_server: S3Server) -> S3Server:
    s3_server.put(BUCKET, {"single/model.tflite": MODEL_BYTES})
    return s3_server


@pytest.fixture
def gate(s3: S3Server) -> Iterator[Gate]:
    """A TCP Gate in front of the S3 server."""
    host, port = s3.server.get_host_and_port()
    g = Gate((host, port))
    yield g
    g.close()


def s3_env(s3: S3Server, endpoint: str | None = None) -> dict[str, str]:
    return {**s3.env, "AWS_ENDPOINT_URL": endpoint or s3.endpoint}


def initializer(uri: str, dest: Path, cache: Path, env: dict[str, str] | None = None):
    """The init container's run: `python -m edgeservers.storage URI DEST --cache-dir CACHE`, timed."""
    start = time.monotonic()
    result = run_cli(uri, str(dest), "--cache-dir", str(cache), env=env)
    return result, time.monotonic() - start


def manifest_of(directory: Path) -> dict:
    return json.loads((directory / MANIFEST).read_text())


# --- (a) first run fills the cache, the second runs offline -------------------------------------------


@pytest.mark.parametrize("outage", ["s3 stopped", "port that never answers", "http 503"])
def test_offline_start_uses_the_cached_copy(outage: str, s3: S3Server, gate: Gate, web: FileServer, tmp_path: Path):
    """The initializer exits 0 from the cache within its timeout, with one line saying the source is
    unreachable and when the copy was fetched; DEST holds the model and a manifest saying cache-offline."""
    cache = tmp_path / "cache"
    if outage == "http 503":
        web.files["offline.tflite"] = MODEL_BYTES
        uri, env, down = web.url("offline.tflite"), None, web.outage(503)
    elif outage == "s3 stopped":
        uri, env, down = f"s3://{BUCKET}/single/model.tflite", s3_env(s3), s3.outage()
    else:
        uri, env = f"s3://{BUCKET}/single/model.tflite", s3_env(s3, gate.url)
        down = gate.blackholed()

    first, _ = initializer(uri, tmp_path / "run1", cache, env)
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith("storage-initializer: wrote 1 file") and "kept in the model cache" in first.stdout
    fetched_at = manifest_of(tmp_path / "run1")["fetched_at"]

    with down:
        second, seconds = initializer(uri, tmp_path / "run2", cache, env)
    assert second.returncode == 0, second.stderr
    (line,) = second.stdout.splitlines()
    assert " unreachable (" in line and f"using the cached copy fetched {fetched_at}" in line, line
    assert seconds < HANG_BOUND
    assert tree(tmp_path / "run2") == {"model.tflite" if "s3" in uri else "offline.tflite": MODEL_BYTES} | {
        MANIFEST: (tmp_path / "run2" / MANIFEST).read_bytes()
    }
    assert manifest_of(tmp_path / "run2")["origin"] == "cache-offline"


def test_an_unchanged_model_is_not_downloaded_again(web: FileServer, tmp_path: Path):
    """The second start sends a conditional GET, gets 304 and copies the verified entry: no body."""
    web.files["same.tflite"] = MODEL_BYTES
    cache = tmp_path / "cache"
    assert initializer(web.url("same.tflite"), tmp_path / "a", cache)[0].returncode == 0
    result, _ = initializer(web.url("same.tflite"), tmp_path / "b", cache)
    assert result.returncode == 0, result.stderr
    assert "unchanged (HTTP 304 Not Modified" in result.stdout and "from the cache" in result.stdout
    assert web.headers_seen["/files/same.tflite"]["If-None-Match"].startswith('"')
    assert (tmp_path / "b" / "same.tflite").read_bytes() == MODEL_BYTES
    assert manifest_of(tmp_path / "b")["origin"] == "cache"


def test_a_model_already_in_dest_counts_as_a_cache(web: FileServer, tmp_path: Path):
    """A disk-backed emptyDir that survived a reboot: its verified files are used in place, even with
    the cache directory gone."""
    web.files["kept.tflite"] = MODEL_BYTES
    dest = tmp_path / "models"
    provide(web.url("kept.tflite"), str(dest), str(tmp_path / "cache"))
    inode = (dest / "kept.tflite").stat().st_ino
    with web.outage(503):
        provided = provide(web.url("kept.tflite"), str(dest), str(tmp_path / "another-cache"))
    assert provided.offline and (dest / "kept.tflite").stat().st_ino == inode


def test_corrupt_cache_and_offline_fails_naming_the_entry(web: FileServer, tmp_path: Path):
    web.files["rot.tflite"] = MODEL_BYTES
    cache = tmp_path / "cache"
    assert initializer(web.url("rot.tflite"), tmp_path / "run1", cache)[0].returncode == 0
    (entry,) = (cache / "entries").iterdir()
    cached = entry / "files" / "rot.tflite"
    cached.write_bytes(b"\0" + cached.read_bytes()[1:])  # one flipped byte: the SD card's bit rot

    with web.outage(503):
        result, _ = initializer(web.url("rot.tflite"), tmp_path / "run2", cache)
    assert result.returncode == 1
    (line,) = result.stderr.splitlines()
    assert "is unreachable (HTTP 503" in line and f"cache entry {entry}: sha256 mismatch for rot.tflite" in line
    assert not (tmp_path / "run2").exists() or [p.name for p in (tmp_path / "run2").iterdir()] == []
    assert not entry.exists()  # a corrupt entry is never used again


def test_a_corrupt_dest_is_replaced_from_the_cache(web: FileServer, tmp_path: Path):
    web.files["fix.tflite"] = MODEL_BYTES
    dest = tmp_path / "models"
    provide(web.url("fix.tflite"), str(dest), str(tmp_path / "cache"))
    (dest / "fix.tflite").write_bytes(b"garbage")
    with web.outage(503):
        provided = provide(web.url("fix.tflite"), str(dest), str(tmp_path / "cache"))
    assert provided.offline and (dest / "fix.tflite").read_bytes() == MODEL_BYTES


@pytest.mark.parametrize("scheme", ["http", "s3"])
def test_a_changed_object_is_fetched_and_replaces_the_entry(
    scheme: str, s3: S3Server, web: FileServer, tmp_path, monkeypatch
):
    other = (MOBILENET_V2 / "mobilenet_v2_1.0_224_quant.tflite").read_bytes()
    if scheme == "http":
        web.files["moving.tflite"] = MODEL_BYTES
        uri = web.url("moving.tflite")
        replace = lambda: web.files.__setitem__("moving.tflite", other)  # noqa: E731
    else:
        for k, v in s3.env.items():
            monkeypatch.setenv(k, v)
        s3.put(BUCKET, {"moving/model.tflite": MODEL_BYTES})
        uri = f"s3://{BUCKET}/moving/model.tflite"
        replace = lambda: s3.put(BUCKET, {"moving/model.tflite": other})  # noqa: E731
    cache, dest = tmp_path / "cache", tmp_path / "models"
    first = provide(uri, str(dest), str(cache))
    replace()
    second = provide(uri, str(dest), str(cache))
    assert second.manifest.origin == "download" and second.manifest.version != first.manifest.version
    assert second.manifest.version == hashlib.sha256(other).hexdigest()[:12]
    assert [p.read_bytes() for p in dest.glob("*.tflite")] == [other]
    (entry,) = (cache / "entries").iterdir()  # replaced, not added
    assert (
        entry / "files" / "model.tflite" if scheme == "s3" else entry / "files" / "moving.tflite"
    ).read_bytes() == other


# --- (c) resumable downloads ---------------------------------------------------------------------------


def test_http_download_cut_at_half_resumes_with_a_range_request(web: FileServer, tmp_path: Path):
    """In one run (a retry) and across runs (the init container restarted): the rest is asked for with
    Range and If-Range, and the file is complete and verified."""
    web.files["cut.tflite"] = MODEL_BYTES
    cache = tmp_path / "cache"
    result, _ = initializer(web.url("cut.tflite", "drop/1"), tmp_path / "models", cache, {"STORAGE_RETRIES": "0"})
    assert result.returncode == 1 and f"closed after {len(MODEL_BYTES) // 2} of" in result.stderr
    (partial,) = (cache / "partial").iterdir()
    assert (partial / "files" / "cut.tflite").stat().st_size == len(MODEL_BYTES) // 2  # kept for the next run

    result, _ = initializer(web.url("cut.tflite", "drop/1"), tmp_path / "models", cache)
    assert result.returncode == 0, result.stderr
    seen = web.headers_seen["/drop/1/cut.tflite"]
    assert seen["Range"] == f"bytes={len(MODEL_BYTES) // 2}-" and seen["If-Range"].startswith('"')
    assert (tmp_path / "models" / "cut.tflite").read_bytes() == MODEL_BYTES
    assert not any((cache / "partial").iterdir())


def test_s3_download_cut_at_half_resumes_with_a_ranged_get(s3: S3Server, gate: Gate, tmp_path: Path, monkeypatch):
    for k, v in s3_env(s3, gate.url).items():
        monkeypatch.setenv(k, v)
    gate.mode, gate.cut_after = "cut", len(MODEL_BYTES) // 2
    provided = provide(f"s3://{BUCKET}/single/model.tflite", str(tmp_path / "models"), str(tmp_path / "cache"))
    assert (tmp_path / "models" / "model.tflite").read_bytes() == MODEL_BYTES
    assert provided.manifest.version == hashlib.sha256(MODEL_BYTES).hexdigest()[:12]
    gets = [r for r in gate.requests if r.startswith("GET /cached-models/single/model.tflite")]
    assert len(gets) == 2 and "range: bytes=" not in gets[0].lower()
    assert "range: bytes=" in gets[1].lower() and "if-match:" in gets[1].lower()


# --- bounds and ownership ------------------------------------------------------------------------------


def test_the_cache_keeps_to_its_size_evicting_the_least_recently_used(web: FileServer, tmp_path: Path, monkeypatch):
    monkeypatch.setenv("STORAGE_CACHE_MAX", str(2 * len(MODEL_BYTES) + 4096))
    cache = tmp_path / "cache"
    for name in ("one", "two", "three"):
        web.files[f"{name}.tflite"] = MODEL_BYTES
        provide(web.url(f"{name}.tflite"), str(tmp_path / name), str(cache))
        time.sleep(0.01)  # distinct last-use times
    kept = {
        json.loads((e / "manifest.json").read_text())["uri"].rsplit("/", 1)[-1] for e in (cache / "entries").iterdir()
    }
    assert kept == {"two.tflite", "three.tflite"}


def test_a_cache_that_cannot_be_written_is_one_clear_error(tmp_path: Path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(StorageError, match=rf"cannot use the model cache {blocker}: .* writable"):
        ModelCache(str(blocker), Limits.resolve())


def test_prepare_cache_gives_the_directory_to_the_pods_user(tmp_path: Path):
    cache = tmp_path / "node" / "var" / "lib" / "edgeservers" / "models"
    result = run_cli("--cache-dir", str(cache), "--prepare-cache", "1000:1000")
    assert result.returncode == 0, result.stderr
    assert (cache.stat().st_uid, cache.stat().st_gid) == (1000, 1000)
    assert result.stdout.strip().endswith("belongs to 1000:1000 (1 path changed)")
    again = run_cli("--cache-dir", str(cache), "--prepare-cache", "1000:1000")
    assert again.stdout.strip().endswith("(0 paths changed)")
    bad = run_cli("--cache-dir", str(cache), "--prepare-cache", "nobody")
    assert bad.returncode == 2 and "expected UID:GID" in bad.stderr


# --- the server: its own download through the cache, offline, and what it reports ----------------------


def test_server_starts_offline_from_the_cache_and_reports_the_models_origin(start_server, web: FileServer, tmp_path):
    """model_uri remote and model_cache_dir set: the server's own download goes through the cache; with
    the source answering 503 it serves the cached copy and /api/v1.0/metadata says so."""
    web.files["mnv2.tar.gz"] = tar_dir(MOBILENET_V2)
    cache = tmp_path / "cache"
    first = provide(web.url("mnv2.tar.gz"), str(tmp_path / "warm"), str(cache))
    with web.outage(503):
        server = start_server(
            "TFLiteServer",
            env={"STORAGE_CONNECT_TIMEOUT": str(CONNECT_TIMEOUT), "NO_PROXY": "127.0.0.1"},
            model_uri=web.url("mnv2.tar.gz"),
            model_cache_dir=str(cache),
        )
        assert server.image("parrot.jpg")["jsonData"][0]["label"] == "macaw"
    custom = requests.get(server.url + "/api/v1.0/metadata", timeout=10).json()["custom"]
    assert custom["model_source"] == "cache-offline"
    assert custom["model_version"] == first.manifest.version
    assert custom["model_fetched_at"] == first.manifest.fetched_at
    warm = provenance(str(tmp_path / "warm"))
    assert warm is not None and warm.origin == "download"
