"""edgeservers.storage (the storage initializer) against real servers on loopback: a local HTTP server
that also drops connections and answers 404/503, a real S3 server (moto in server mode), local paths,
file:// URIs, archives (good and hostile), sha256 checks, and the CLI as a real subprocess."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
from storage_fixtures import (
    LABELS,
    MODEL,
    ROOT,
    closed_port,
    link,
    make_tar,
    make_zip,
    model_files,
    serve_files,
    tree,
)

from edgeservers import storage
from edgeservers.storage import StorageError, download, is_remote

MODEL_BYTES = MODEL.read_bytes()
MODEL_SHA = hashlib.sha256(MODEL_BYTES).hexdigest()
SECRET = "wJalrXUtnFEMI-K7MDENG-bPxRfiCYEXAMPLEKEY"
BUCKET = "edge-models"


@pytest.fixture(autouse=True)
def quick_and_isolated(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fast retries; loopback never through a proxy; no AWS settings from the machine."""
    monkeypatch.setenv("STORAGE_RETRIES", "2")
    monkeypatch.setenv("STORAGE_RETRY_DELAY", "0.01")
    monkeypatch.setenv("STORAGE_TIMEOUT", "10")
    for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    for name in list(os.environ):
        if name.startswith("AWS_") or name.startswith("S3_") or name in ("USE_SSL", "GOOGLE_APPLICATION_CREDENTIALS"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.fixture(scope="module")
def web():
    yield from serve_files()


@pytest.fixture(autouse=True)
def _reset_hits(request: pytest.FixtureRequest) -> None:
    if "web" in request.fixturenames:
        request.getfixturevalue("web").hits.clear()


@pytest.fixture(scope="module")
def s3_server():
    moto_server = pytest.importorskip("moto.server")
    import boto3

    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    client = boto3.client(
        "s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="AKIDEXAMPLE", aws_secret_access_key=SECRET
    )
    client.create_bucket(Bucket=BUCKET)
    objects = {
        "mnv1/model.tflite": MODEL_BYTES,
        "mnv1/meta/labels.txt": LABELS.read_bytes(),
        "mnv1/meta/": b"",  # a "folder" marker, as consoles create them
        "mnv1-old/stale.txt": b"must not be fetched with mnv1/",
        "single/mobilenet.tflite": MODEL_BYTES,
        "archives/model.tar.gz": make_tar(list(model_files().items()), "w:gz"),
        "hostile/../../evil.txt": b"evil",
    }
    for key, body in objects.items():
        client.put_object(Bucket=BUCKET, Key=key, Body=body)
    yield endpoint, client
    server.stop()


@pytest.fixture
def s3(s3_server, monkeypatch: pytest.MonkeyPatch):
    endpoint, client = s3_server
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    return endpoint, client


def listing(path: Path) -> list[str]:
    return sorted(p.relative_to(path).as_posix() for p in path.rglob("*"))


# --- is_remote and URI handling ---------------------------------------------------------------


@pytest.mark.parametrize(
    "uri, remote",
    [
        ("s3://bucket/model", True),
        ("S3://bucket/model", True),
        ("gs://bucket/model", True),
        ("https://example.org/m.tflite", True),
        ("http://127.0.0.1/m.tflite", True),
        ("file:///mnt/models", False),
        ("/mnt/models", False),
        ("models/mobilenet_v2_quant", False),
        ("", False),
    ],
)
def test_is_remote(uri: str, remote: bool) -> None:
    assert is_remote(uri) is remote


def test_unsupported_scheme_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match=r"unsupported URI scheme 'ftp://'.*use s3://"):
        download("ftp://example.org/model.tflite", str(tmp_path / "dest"))
    with pytest.raises(StorageError, match="no model URI"):
        download("  ", str(tmp_path / "dest"))


# --- local paths and file:// -------------------------------------------------------------------


def test_local_file_is_copied_keeping_its_name(tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    assert download(str(MODEL), str(dest)) == str(dest)
    assert tree(dest) == {MODEL.name: MODEL_BYTES}


def test_file_uri_of_a_directory_copies_the_tree(tmp_path: Path) -> None:
    src = tmp_path / "src dir"
    for rel, data in model_files().items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_bytes(data)
    dest = tmp_path / "dest"
    download(src.as_uri(), str(dest))  # as_uri() percent-encodes the space
    assert tree(dest) == model_files()


def test_missing_local_path(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="no such file or directory"):
        download(str(tmp_path / "nope.tflite"), str(tmp_path / "dest"))
    assert listing(tmp_path / "dest") == []


def test_destination_inside_source_is_refused(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("a")
    with pytest.raises(StorageError, match="inside the source"):
        download(str(tmp_path), str(tmp_path / "dest"))


# --- archives -----------------------------------------------------------------------------------

GOOD_ARCHIVES = {
    "model.zip": lambda: make_zip(model_files()),
    "model.tar": lambda: make_tar(list(model_files().items())),
    "model.tar.gz": lambda: make_tar(list(model_files().items()), "w:gz"),
    "model.tgz": lambda: make_tar(list(model_files().items()), "w:gz"),
}


@pytest.mark.parametrize("name", sorted(GOOD_ARCHIVES))
def test_archives_are_unpacked_and_not_kept(tmp_path: Path, name: str) -> None:
    archive = tmp_path / name
    archive.write_bytes(GOOD_ARCHIVES[name]())
    dest = tmp_path / "dest"
    download(str(archive), str(dest))
    assert tree(dest) == model_files()
    assert archive.exists()  # the source stays; only the fetched copy is removed


def test_corrupt_archive_is_a_clear_error(tmp_path: Path) -> None:
    archive = tmp_path / "model.tar.gz"
    archive.write_bytes(b"\x1f\x8b" + b"not really gzip" * 10)
    dest = tmp_path / "dest"
    with pytest.raises(StorageError, match="cannot unpack archive model.tar.gz"):
        download(str(archive), str(dest))
    assert listing(dest) == []


HOSTILE = {
    "zip-dotdot.zip": (lambda: make_zip({"ok.txt": b"ok", "../evil.txt": b"evil"}), "would land outside"),
    "zip-absolute.zip": (lambda: make_zip({"/tmp/evil.txt": b"evil"}), "absolute path"),
    "tar-absolute.tar": (lambda: make_tar([("ok.txt", b"ok"), ("/tmp/evil.txt", b"evil")]), "absolute path"),
    "tar-dotdot.tar.gz": (lambda: make_tar([("a/../../evil.txt", b"evil")], "w:gz"), "would land outside"),
    "tar-symlink-out.tar": (
        lambda: make_tar([link("out", "../.."), ("out/evil.txt", b"evil")]),
        "written through the link|points outside",
    ),
    "tar-symlink-only.tgz": (lambda: make_tar([link("passwd", "../../../etc/passwd")], "w:gz"), "points outside"),
    "tar-symlink-abs.tar": (lambda: make_tar([link("passwd", "/etc/passwd")]), "absolute path"),
    "tar-hardlink-out.tar": (lambda: make_tar([link("passwd", "../../etc/passwd", hard=True)]), "hard link 'passwd' points outside"),
    "tar-hardlink-abs.tar": (lambda: make_tar([link("passwd", "/etc/passwd", hard=True)]), "hard link 'passwd' points outside"),
    # Each link lexically inside, together outside: s1 -> dest itself, s2 -> s1/.. = dest/..
    "tar-symlink-chain.tar": (
        lambda: make_tar([link("s1", "."), link("s2", "s1/..")]),
        "climbs out of the link 's1'",
    ),
    "tar-through-inner-link.tar": (
        lambda: make_tar([("sub/x.txt", b"x"), link("l", "sub"), ("l/y.txt", b"y")]),
        "written through the link 'l'",
    ),
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_archives_are_refused_and_nothing_is_written(tmp_path: Path, name: str) -> None:
    build, reason = HOSTILE[name]
    work = tmp_path / "deep" / "er"
    work.mkdir(parents=True)
    archive = work / name
    archive.write_bytes(build())
    dest = work / "dest"
    dest.mkdir()
    (dest / "keep.txt").write_text("from an earlier run")
    before = listing(tmp_path)
    with pytest.raises(StorageError, match=rf"refused archive {name}: .*({reason})"):
        download(str(archive), str(dest))
    assert listing(tmp_path) == before  # nothing outside dest, nothing new inside it
    assert not Path("/tmp/evil.txt").exists()


def test_benign_links_inside_an_archive_are_kept(tmp_path: Path) -> None:
    archive = tmp_path / "links.tar"
    archive.write_bytes(
        make_tar([("v1/model.tflite", MODEL_BYTES), link("current", "v1"), link("v1/again.tflite", "../v1/model.tflite")])
    )
    dest = tmp_path / "dest"
    download(str(archive), str(dest))
    assert (dest / "current").is_symlink()
    assert (dest / "current" / "model.tflite").read_bytes() == MODEL_BYTES
    assert (dest / "v1" / "again.tflite").read_bytes() == MODEL_BYTES


# --- sha256 -------------------------------------------------------------------------------------


def test_sha256_match_and_fragment(tmp_path: Path) -> None:
    download(str(MODEL), str(tmp_path / "a"), sha256=MODEL_SHA.upper())
    download(f"{MODEL}#sha256={MODEL_SHA}", str(tmp_path / "b"))
    assert tree(tmp_path / "a") == tree(tmp_path / "b") == {MODEL.name: MODEL_BYTES}


def test_sha256_mismatch_leaves_nothing(tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    with pytest.raises(StorageError, match=f"sha256 mismatch for {MODEL.name}: expected 0+, got {MODEL_SHA}"):
        download(str(MODEL), str(dest), sha256="0" * 64)
    assert listing(dest) == []


def test_sha256_needs_a_single_file(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="needs a single file"):
        download(str(MODEL.parent), str(tmp_path / "dest"), sha256=MODEL_SHA)
    with pytest.raises(StorageError, match="64 hexadecimal digits"):
        download(str(MODEL), str(tmp_path / "dest"), sha256="abc")


def test_sha256_of_an_archive_is_checked_before_unpacking(tmp_path: Path) -> None:
    data = GOOD_ARCHIVES["model.zip"]()
    archive = tmp_path / "model.zip"
    archive.write_bytes(data)
    download(str(archive), str(tmp_path / "dest"), sha256=hashlib.sha256(data).hexdigest())
    assert tree(tmp_path / "dest") == model_files()


# --- http:// ------------------------------------------------------------------------------------


def test_http_single_file_keeps_its_name(web, tmp_path: Path) -> None:
    web.files["mobilenet.tflite"] = MODEL_BYTES
    dest = tmp_path / "dest"
    download(f"{web.base}/files/mobilenet.tflite?token=abc", str(dest), sha256=MODEL_SHA)
    assert tree(dest) == {"mobilenet.tflite": MODEL_BYTES}


def test_http_content_disposition_names_the_file(web, tmp_path: Path) -> None:
    web.files["named.tflite"] = MODEL_BYTES
    download(f"{web.base}/download?named.tflite", str(tmp_path / "dest"))
    assert tree(tmp_path / "dest") == {"named.tflite": MODEL_BYTES}


def test_http_archive_is_unpacked(web, tmp_path: Path) -> None:
    web.files["bundle.tgz"] = GOOD_ARCHIVES["model.tgz"]()
    download(f"{web.base}/files/bundle.tgz", str(tmp_path / "dest"))
    assert tree(tmp_path / "dest") == model_files()


def test_http_dropped_connection_is_retried(web, tmp_path: Path) -> None:
    web.files["m.tflite"] = MODEL_BYTES
    download(f"{web.base}/drop/1/m.tflite", str(tmp_path / "dest"))
    assert tree(tmp_path / "dest") == {"m.tflite": MODEL_BYTES}
    assert web.hits["/drop/1/m.tflite"] == 2


def test_http_connection_that_keeps_dropping_leaves_no_complete_looking_file(web, tmp_path: Path) -> None:
    web.files["m.tflite"] = MODEL_BYTES
    dest = tmp_path / "dest"
    with pytest.raises(StorageError, match=rf"closed after {len(MODEL_BYTES) // 2} of {len(MODEL_BYTES)} bytes.*gave up after 3 attempts"):
        download(f"{web.base}/drop/99/m.tflite", str(dest))
    assert listing(dest) == []  # neither m.tflite nor a staging directory
    assert web.hits["/drop/99/m.tflite"] == 3


def test_http_503_is_retried(web, tmp_path: Path) -> None:
    web.files["m.tflite"] = MODEL_BYTES
    download(f"{web.base}/flaky/503/2/m.tflite", str(tmp_path / "dest"))
    assert tree(tmp_path / "dest") == {"m.tflite": MODEL_BYTES}
    assert web.hits["/flaky/503/2/m.tflite"] == 3


@pytest.mark.parametrize("code", [404, 403])
def test_http_4xx_is_not_retried(web, tmp_path: Path, code: int) -> None:
    with pytest.raises(StorageError, match=rf"HTTP {code} .* from {web.base}/status/{code}/m.tflite$"):
        download(f"{web.base}/status/{code}/m.tflite", str(tmp_path / "dest"))
    assert web.hits[f"/status/{code}/m.tflite"] == 1
    assert listing(tmp_path / "dest") == []


def test_http_connection_refused_gives_up_clearly(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{closed_port()}/m.tflite"
    with pytest.raises(StorageError, match=rf"cannot reach {url}: .*refused.*gave up after 3 attempts"):
        download(url, str(tmp_path / "dest"))


def test_http_messages_hide_credentials(web, tmp_path: Path) -> None:
    url = f"http://modeluser:{SECRET}@127.0.0.1:{web.server_address[1]}/status/404/m.tflite?X-Amz-Signature=sig{SECRET}"
    with pytest.raises(StorageError) as err:
        download(url, str(tmp_path / "dest"))
    assert SECRET not in str(err.value) and "modeluser" not in str(err.value)
    assert "HTTP 404" in str(err.value)


def test_http_url_without_a_file_name(web, tmp_path: Path) -> None:
    web.files[""] = MODEL_BYTES
    with pytest.raises(StorageError, match="cannot tell a file name|HTTP 404"):
        download(f"{web.base}/", str(tmp_path / "dest"))


# --- s3:// (moto server on loopback) ------------------------------------------------------------


def test_s3_single_key(s3, tmp_path: Path) -> None:
    download(f"s3://{BUCKET}/single/mobilenet.tflite", str(tmp_path / "dest"), sha256=MODEL_SHA)
    assert tree(tmp_path / "dest") == {"mobilenet.tflite": MODEL_BYTES}


def test_s3_prefix_keeps_relative_paths_and_skips_siblings(s3, tmp_path: Path) -> None:
    for uri in (f"s3://{BUCKET}/mnv1", f"s3://{BUCKET}/mnv1/"):
        dest = tmp_path / uri.rstrip("/").rsplit("/", 1)[-1] / str(uri.endswith("/"))
        download(uri, str(dest))
        assert tree(dest) == model_files()


def test_s3_archive_is_unpacked(s3, tmp_path: Path) -> None:
    download(f"s3://{BUCKET}/archives/model.tar.gz", str(tmp_path / "dest"))
    assert tree(tmp_path / "dest") == model_files()


def test_s3_endpoint_as_host_port_with_plain_http(s3, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    endpoint, _ = s3
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    monkeypatch.setenv("S3_ENDPOINT", endpoint.removeprefix("http://"))
    for flag in ("S3_USE_HTTPS", "USE_SSL"):
        with monkeypatch.context() as m:
            m.setenv(flag, "0")
            download(f"s3://{BUCKET}/single/mobilenet.tflite", str(tmp_path / flag))
            assert tree(tmp_path / flag) == {"mobilenet.tflite": MODEL_BYTES}


def test_s3_missing_key_and_bucket(s3, tmp_path: Path) -> None:
    endpoint, _ = s3
    with pytest.raises(StorageError, match=rf"nothing found at s3://{BUCKET}/nope"):
        download(f"s3://{BUCKET}/nope", str(tmp_path / "dest"))
    with pytest.raises(StorageError, match=rf"bucket 'no-such-bucket' does not exist on {endpoint}"):
        download("s3://no-such-bucket/model", str(tmp_path / "dest"))
    assert listing(tmp_path / "dest") == []


def test_s3_sha256_on_a_prefix_is_refused_before_download(s3, tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="needs a single file"):
        download(f"s3://{BUCKET}/mnv1", str(tmp_path / "dest"), sha256=MODEL_SHA)
    assert listing(tmp_path / "dest") == []


def test_s3_hostile_key_is_refused(s3, tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="refused object key"):
        download(f"s3://{BUCKET}/hostile", str(tmp_path / "deep" / "dest"))
    assert listing(tmp_path) == ["deep", "deep/dest"]


def test_s3_unreachable_endpoint(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("STORAGE_RETRIES", "1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    endpoint = f"http://127.0.0.1:{closed_port()}"
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    with pytest.raises(StorageError, match=f"cannot reach S3 endpoint {endpoint}"):
        download(f"s3://{BUCKET}/single/mobilenet.tflite", str(tmp_path / "dest"))


# --- gs:// --------------------------------------------------------------------------------------
# google-cloud-storage is optional (see storage-initializer/README.md) and not in requirements-dev.txt
# (its google-api-core stack pulls protobuf beyond seldon-core's <4 pin), so the emulator test runs
# only where both it and gcp-storage-emulator are installed.


def test_gs_against_a_local_emulator(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    pytest.importorskip("google.cloud.storage")
    emulator = pytest.importorskip("gcp_storage_emulator.server")
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage as gcs

    port = closed_port()
    server = emulator.create_server("127.0.0.1", port, in_memory=True, default_bucket=BUCKET)
    server.start()
    try:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{port}")
        bucket = gcs.Client(project="test", credentials=AnonymousCredentials()).bucket(BUCKET)
        for key, body in {"mnv1/model.tflite": MODEL_BYTES, "mnv1/meta/labels.txt": LABELS.read_bytes(), "mnv1-old/x": b"x"}.items():
            bucket.blob(key).upload_from_string(body)
        download(f"gs://{BUCKET}/mnv1", str(tmp_path / "tree"))
        assert tree(tmp_path / "tree") == model_files()
        download(f"gs://{BUCKET}/mnv1/model.tflite", str(tmp_path / "one"), sha256=MODEL_SHA)
        assert tree(tmp_path / "one") == {"model.tflite": MODEL_BYTES}
        with pytest.raises(StorageError, match=f"nothing found at gs://{BUCKET}/nope"):
            download(f"gs://{BUCKET}/nope", str(tmp_path / "none"))
    finally:
        server.stop()



def test_gs_without_the_library_says_so(tmp_path: Path) -> None:
    try:
        import google.cloud.storage  # noqa: F401

        pytest.skip("google-cloud-storage is installed here")
    except ImportError:
        pass
    with pytest.raises(StorageError, match="gs:// needs the google-cloud-storage package"):
        download("gs://bucket/model.tflite", str(tmp_path / "dest"))


# --- the CLI, as the init container runs it ----------------------------------------------------


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "edgeservers.storage", *args],
        cwd=ROOT,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_cli_success_prints_one_line(web, tmp_path: Path) -> None:
    web.files["mobilenet.tflite"] = MODEL_BYTES
    url = f"{web.base}/files/mobilenet.tflite"
    result = run_cli(url, str(tmp_path / "models"), "--sha256", MODEL_SHA)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert result.stdout.splitlines() == [
        f"storage-initializer: wrote 1 file ({len(MODEL_BYTES)} bytes) from {url} to {tmp_path / 'models'}"
    ]
    assert tree(tmp_path / "models") == {"mobilenet.tflite": MODEL_BYTES}


def test_cli_failure_is_one_line_on_stderr(web, tmp_path: Path) -> None:
    result = run_cli(f"{web.base}/status/404/m.tflite", str(tmp_path / "models"))
    assert result.returncode == 1
    assert result.stderr.splitlines() == [f"storage-initializer: error: HTTP 404 Not Found from {web.base}/status/404/m.tflite"]


def test_cli_retries_are_noted_on_stdout_and_the_error_stays_one_line(web, tmp_path: Path) -> None:
    web.files["m.tflite"] = MODEL_BYTES
    result = run_cli(f"{web.base}/drop/99/m.tflite", str(tmp_path / "models"))
    assert result.returncode == 1
    assert len(result.stderr.splitlines()) == 1
    assert "gave up after 3 attempts" in result.stderr
    assert [line.split(";")[-1].split(" in ")[0] for line in result.stdout.splitlines()] == [" retry 1/2", " retry 2/2"]
    assert listing(tmp_path / "models") == []


def test_cli_usage_error_is_one_line(tmp_path: Path) -> None:
    result = run_cli("s3://bucket/model")
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("storage-initializer: error: the following arguments are required: dest_dir")


def test_cli_s3_errors_never_show_credentials(s3, tmp_path: Path) -> None:
    endpoint, _ = s3
    env = {
        "AWS_ACCESS_KEY_ID": "AKIDEXAMPLE",
        "AWS_SECRET_ACCESS_KEY": SECRET,
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_REGION": "us-east-1",
    }
    ok = run_cli(f"s3://{BUCKET}/mnv1", str(tmp_path / "models"), env=env)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith("storage-initializer: wrote 2 files")
    assert tree(tmp_path / "models") == model_files()
    bad = run_cli("s3://no-such-bucket/m", str(tmp_path / "other"), env=env)
    assert bad.returncode == 1 and len(bad.stderr.splitlines()) == 1
    assert SECRET not in bad.stderr + bad.stdout and "AKIDEXAMPLE" not in bad.stderr + bad.stdout


def test_module_imports_nothing_heavy() -> None:
    code = "import sys, edgeservers.storage; print(sorted(m for m in ('numpy','cv2','seldon_core','boto3','requests') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    assert storage.PARTIAL_PREFIX.startswith(".")
