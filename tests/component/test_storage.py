"""edgeservers.storage (the storage initializer) in-process, against real servers on loopback: a local HTTP
server that also drops connections, answers 404/503, sends no Content-Length, an endless body or a trickle, a
real S3 server (moto in server mode), local paths, file:// URIs, archives (good, hostile and bombs), the limits
and sha256 checks (tests/e2e/test_storage_cli.py runs the CLI as the init container does)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from edgeservers import storage
from edgeservers.storage import StorageError, download, is_remote
from tests.support.paths import ROOT
from tests.support.services import (
    MODEL,
    FileServer,
    S3Server,
    closed_port,
    link,
    make_tar,
    make_zip,
    many_files_tgz,
    model_files,
    tree,
)
from tests.support.storage import (
    BUCKET,
    MODEL_BYTES,
    MODEL_SHA,
    SECRET,
    listing,
    put_models,
    tar_bomb,
    zip_bomb,
)

pytestmark = pytest.mark.usefixtures("quick_storage")


@pytest.fixture(autouse=True)
def _reset_hits(request: pytest.FixtureRequest) -> None:
    if "web" in request.fixturenames:
        request.getfixturevalue("web").hits.clear()


@pytest.fixture(scope="module")
def s3_objects(s3_server: S3Server) -> S3Server:
    return put_models(s3_server)


@pytest.fixture
def s3(s3_objects: S3Server, monkeypatch: pytest.MonkeyPatch):
    for name, value in s3_objects.env.items():
        monkeypatch.setenv(name, value)
    return s3_objects.endpoint, s3_objects.client


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
    "tar-hardlink-out.tar": (
        lambda: make_tar([link("passwd", "../../etc/passwd", hard=True)]),
        "hard link 'passwd' points outside",
    ),
    "tar-hardlink-abs.tar": (
        lambda: make_tar([link("passwd", "/etc/passwd", hard=True)]),
        "hard link 'passwd' points outside",
    ),
    # Each link lexically inside, together outside: s1 -> dest itself, s2 -> s1/.. = dest/..
    "tar-symlink-chain.tar": (
        lambda: make_tar([link("s1", "."), link("s2", "s1/..")]),
        "climbs out of the link 's1'",
    ),
    "tar-through-inner-link.tar": (
        lambda: make_tar([("sub/x.txt", b"x"), link("l", "sub"), ("l/y.txt", b"y")]),
        "written through the link 'l'",
    ),
    # The chain above in the other order: s1 is not a link yet when s2 is checked, so '..' after a name
    # is refused whatever the name turns out to be.
    "tar-symlink-chain-reversed.tar": (
        lambda: make_tar([link("s2", "s1/.."), link("s1", ".")]),
        "climbs out of 's1'",
    ),
    "tar-link-replaces-dir.tar": (lambda: make_tar([("d/x.txt", b"x"), link("d", ".")]), "entry 'd' appears twice"),
    "tar-hardlink-to-later.tar": (
        lambda: make_tar([link("early", "late.txt", hard=True), ("late.txt", b"x")]),
        "not a file written before it",
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
        make_tar(
            [("v1/model.tflite", MODEL_BYTES), link("current", "v1"), link("v1/again.tflite", "../v1/model.tflite")]
        )
    )
    dest = tmp_path / "dest"
    download(str(archive), str(dest))
    assert (dest / "current").is_symlink()
    assert (dest / "current" / "model.tflite").read_bytes() == MODEL_BYTES
    assert (dest / "v1" / "again.tflite").read_bytes() == MODEL_BYTES


# --- limits: bombs, many files, endless and trickling bodies -------------------------------------

BOMB = 64 << 20  # zeros: a 64 MiB entry compresses to 64 KiB


def lying_zip() -> bytes:
    """A 1 MiB entry whose local header and central directory both claim 1000 bytes."""
    data = bytearray(make_zip({"lie.bin": bytes(1 << 20)}))
    for sig, offset in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):  # uncompressed-size fields
        at = data.index(sig) + offset
        data[at : at + 4] = (1000).to_bytes(4, "little")
    return bytes(data)


@pytest.mark.parametrize("name, build", [("bomb.zip", zip_bomb), ("bomb.tgz", tar_bomb)])
def test_archive_bombs_are_refused_before_writing(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, name, build) -> None:
    monkeypatch.setenv("STORAGE_MAX_UNPACKED", "16M")
    archive = tmp_path / name
    archive.write_bytes(build(BOMB))
    dest = tmp_path / "dest"
    with pytest.raises(
        StorageError,
        match=rf"^archive {name} (declares 64 MiB unpacked|unpacks to more than 16 MiB "
        r"\(entry 'zeros.bin' declares 64 MiB\)): limit 16 MiB \(set with --max-unpacked or STORAGE_MAX_UNPACKED\)$",
    ):
        download(str(archive), str(dest))
    assert listing(dest) == []


def test_zip_sizes_that_lie_are_caught(tmp_path: Path) -> None:
    archive = tmp_path / "lie.zip"
    archive.write_bytes(lying_zip())
    with pytest.raises(StorageError, match="cannot unpack archive lie.zip: Bad CRC-32"):
        download(str(archive), str(tmp_path / "dest"))
    assert listing(tmp_path / "dest") == []


def test_bytes_written_are_counted_across_entries(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("STORAGE_MAX_UNPACKED", "8M")
    archive = tmp_path / "parts.tar"
    archive.write_bytes(make_tar([(f"part{i}.bin", bytes(1 << 20)) for i in range(12)]))
    with pytest.raises(StorageError, match=r"unpacks to more than 8 MiB \(entry 'part8.bin' declares 1 MiB\)"):
        download(str(archive), str(tmp_path / "dest"))
    assert listing(tmp_path / "dest") == []


@pytest.mark.parametrize("kind", ["tgz", "zip"])
def test_too_many_entries(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, kind: str) -> None:
    monkeypatch.setenv("STORAGE_MAX_FILES", "50")
    archive = tmp_path / f"many.{kind}"
    if kind == "zip":
        archive.write_bytes(make_zip({f"f{i}": b"" for i in range(51)}))
    else:
        many_files_tgz(archive, 51)
    with pytest.raises(
        StorageError,
        match=rf"archive many.{kind} (holds more than 50 entries|holds 51 entries): "
        r"limit 50 files \(set with --max-files or STORAGE_MAX_FILES\)",
    ):
        download(str(archive), str(tmp_path / "dest"))
    assert listing(tmp_path / "dest") == []


def test_local_directory_copies_are_limited_too(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for i in range(3):
        (src / f"{i}.bin").write_bytes(bytes(1 << 20))
    monkeypatch.setenv("STORAGE_MAX_FILES", "2")
    with pytest.raises(StorageError, match="holds more than 2 files: limit 2 files"):
        download(str(src), str(tmp_path / "a"))
    monkeypatch.setenv("STORAGE_MAX_FILES", "10")
    monkeypatch.setenv("STORAGE_MAX_DOWNLOAD", "2.5M")
    with pytest.raises(StorageError, match=r"is more than 2.5 MiB in all: limit 2.5 MiB \(set with --max-download"):
        download(str(src), str(tmp_path / "b"))
    assert listing(tmp_path / "a") == listing(tmp_path / "b") == []


def test_http_body_without_content_length(web: FileServer, tmp_path: Path) -> None:
    web.files["m.tflite"] = MODEL_BYTES
    download(web.url("m.tflite", "nolength"), str(tmp_path / "dest"))
    assert tree(tmp_path / "dest") == {"m.tflite": MODEL_BYTES}


def test_http_endless_body_stops_at_the_download_limit(
    web: FileServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("STORAGE_MAX_DOWNLOAD", "4M")
    url = web.url("m.tflite", "endless")
    with pytest.raises(
        StorageError,
        match=rf"^{url} is more than 4 MiB in all: limit 4 MiB \(set with --max-download or STORAGE_MAX_DOWNLOAD\)$",
    ):
        download(url, str(tmp_path / "dest"))
    assert web.hits["/endless/m.tflite"] == 1  # a limit is not retried
    assert listing(tmp_path / "dest") == []


def test_http_content_length_over_the_limit_is_refused_before_the_body(
    web: FileServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("STORAGE_MAX_DOWNLOAD", "100K")
    web.files["m.tflite"] = MODEL_BYTES
    with pytest.raises(StorageError, match=rf"\(Content-Length {len(MODEL_BYTES)}\) is more than 100 KiB in all"):
        download(web.url("m.tflite"), str(tmp_path / "dest"))
    assert listing(tmp_path / "dest") == []


def test_http_trickle_slower_than_the_stall_timeout_fails(
    web: FileServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("STORAGE_STALL_TIMEOUT", "1")
    web.files["six.bin"] = b"sixbyt"
    url = web.url("3/six.bin", "trickle")
    with pytest.raises(
        StorageError,
        match=rf"^transfer from {url} stalled \(less than 64 KiB in that time\): limit 1 s "
        r"\(set with --stall-timeout or STORAGE_STALL_TIMEOUT\) \(gave up after 3 attempts\)$",
    ):
        download(url, str(tmp_path / "dest"))
    assert web.hits["/trickle/3/six.bin"] == 3
    assert listing(tmp_path / "dest") == []


def test_http_trickle_of_bytes_within_the_stall_timeout_still_fails(
    web: FileServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A slow trickle: a byte every 0.4 s never leaves a 1 s gap, but 64 KiB do not
    arrive within 1 s, so the transfer is stalled all the same."""
    monkeypatch.setenv("STORAGE_STALL_TIMEOUT", "1")
    monkeypatch.setenv("STORAGE_RETRIES", "0")
    web.files["six.bin"] = b"sixbyt"
    url = web.url("0.4/six.bin", "trickle")
    with pytest.raises(
        StorageError, match=rf"^transfer from {url} stalled .*: limit 1 s .*\(gave up after 1 attempt\)$"
    ):
        download(url, str(tmp_path / "dest"))
    assert listing(tmp_path / "dest") == []


def test_http_trickle_within_the_stall_timeout_is_waited_for(
    web: FileServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("STORAGE_STALL_TIMEOUT", "5")
    web.files["six.bin"] = b"sixbyt"
    download(web.url("0.05/six.bin", "trickle"), str(tmp_path / "dest"))
    assert tree(tmp_path / "dest") == {"six.bin": b"sixbyt"}


def test_http_through_a_proxy(web: FileServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """http_proxy is honoured as urllib honours it (the test server answers proxy requests too)."""
    monkeypatch.setenv("http_proxy", web.base)
    monkeypatch.delenv("NO_PROXY")
    web.files["m.tflite"] = MODEL_BYTES
    download("http://models.example.invalid/files/m.tflite", str(tmp_path / "dest"))
    assert tree(tmp_path / "dest") == {"m.tflite": MODEL_BYTES}
    assert web.hits["/files/m.tflite"] == 1


def test_s3_limits_are_checked_from_the_listing(s3, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("STORAGE_MAX_FILES", "1")
    with pytest.raises(StorageError, match=rf"s3://{BUCKET}/mnv1 holds more than 1 objects: limit 1 files"):
        download(f"s3://{BUCKET}/mnv1", str(tmp_path / "dest"))
    monkeypatch.setenv("STORAGE_MAX_DOWNLOAD", "100K")
    with pytest.raises(StorageError, match=rf"s3://{BUCKET}/single/mobilenet.tflite is more than 100 KiB in all"):
        download(f"s3://{BUCKET}/single/mobilenet.tflite", str(tmp_path / "dest"))
    assert listing(tmp_path / "dest") == []


def test_bad_limit_settings_are_one_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("STORAGE_MAX_FILES", "many")
    with pytest.raises(StorageError, match="^STORAGE_MAX_FILES: 'many' is not a positive whole number$"):
        download(str(MODEL), str(tmp_path / "dest"))


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
    got = 0
    for _attempt in range(3):  # each attempt resumes (Range) where the last one broke off, and gets half the rest
        got += (len(MODEL_BYTES) - got) // 2
    with pytest.raises(
        StorageError,
        match=rf"closed after {got} of {len(MODEL_BYTES)} bytes.*gave up after 3 attempts",
    ):
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


def test_http_redirects_keep_the_name_and_basic_auth_stays_on_its_host(web: FileServer, tmp_path: Path) -> None:
    """The file is named from the URL given (a release URL redirects to an opaque blob URL), and the
    credentials of that URL are not sent to another host."""
    web.files["blob"] = MODEL_BYTES
    port = web.server_address[1]
    for host, kept in (("localhost", False), ("127.0.0.1", True)):  # same port, another host name
        target = f"http://{host}:{port}/files/blob"
        download(f"http://modeluser:{SECRET}@127.0.0.1:{port}/redirect/m.tflite?{target}", str(tmp_path / host))
        assert tree(tmp_path / host) == {"m.tflite": MODEL_BYTES}
        assert web.headers_seen["/redirect/m.tflite"]["Authorization"].startswith("Basic ")
        assert ("Authorization" in web.headers_seen["/files/blob"]) is kept


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


def test_gs_is_refused_with_the_way_to_reach_gcs(tmp_path: Path) -> None:
    with pytest.raises(
        StorageError, match=r"^gs:// is not supported: .*s3://.*AWS_ENDPOINT_URL=https://storage.googleapis.com.*HMAC"
    ):
        download("gs://bucket/model.tflite", str(tmp_path / "dest"))
    assert listing(tmp_path) == []


def test_module_imports_nothing_heavy() -> None:
    code = "import sys, edgeservers.storage; print(sorted(m for m in ('numpy','cv2','seldon_core','boto3','urllib3','requests') if m in sys.modules))"
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == "[]"
    assert storage.PARTIAL_PREFIX.startswith(".")
