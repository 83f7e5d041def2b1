"""The download itself: staging directory, scheme dispatch, checksum, unpacking, merge into dest."""

from __future__ import annotations

import hashlib
import importlib
import os
import re
import shutil
import tempfile
from collections.abc import Callable

from .archive import archive_kind, unpack
from .common import CHUNK, Budget, Limits, StorageError, os_reason, redact, scheme

REMOTE_SCHEMES = ("s3", "gs", "http", "https")
PARTIAL_PREFIX = ".partial-"
# scheme -> (module, the package it needs)
_FETCHERS = {
    "": ("local", ""),
    "file": ("local", ""),
    "http": ("http", "urllib3"),
    "https": ("http", "urllib3"),
    "s3": ("s3", "boto3"),
}
_GS = (
    "gs:// is not supported: reach Google Cloud Storage through its S3-compatible XML API, "
    "s3://<bucket>/<path> with AWS_ENDPOINT_URL=https://storage.googleapis.com and an HMAC key "
    "in AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
)


def is_remote(uri: str) -> bool:
    """True when `uri` must be fetched (s3://, gs://, http(s)://); False for local paths and file://."""
    return scheme(uri) in REMOTE_SCHEMES


def download(uri: str, dest_dir: str, sha256: str | None = None) -> str:
    """Fetch `uri` into `dest_dir` (created if missing) and return `dest_dir`.

    A single file keeps its name (an archive is unpacked instead); a directory or S3 prefix keeps its
    relative layout. The limits are the environment's (STORAGE_MAX_*, STORAGE_STALL_TIMEOUT), so the
    servers' own downloads obey the same settings as the initializer. Raises StorageError on any
    failure, leaving no partial file in dest_dir.
    """
    fetch(uri, dest_dir, sha256, Limits.resolve())
    return dest_dir


def fetch(uri: str, dest_dir: str, sha256: str | None, limits: Limits) -> tuple[str, int, int]:
    """download() plus what the CLI reports: (absolute dest, files written, bytes written)."""
    if not isinstance(uri, str) or not uri.strip():
        raise StorageError("no model URI given")
    uri, fragment_sha = _split_sha256_fragment(uri.strip())
    expected = _normalise_sha256(sha256, fragment_sha)
    fetcher = _fetcher(uri)
    dest = os.path.abspath(dest_dir)
    try:
        os.makedirs(dest, exist_ok=True)
        staging = tempfile.mkdtemp(prefix=PARTIAL_PREFIX, dir=dest)
    except OSError as e:
        raise StorageError(f"cannot write to destination {dest}: {e.strerror or e}") from None
    try:
        fetched = os.path.join(staging, "fetched")
        os.mkdir(fetched)
        single = fetcher(uri, fetched, expected is not None, Budget(limits))
        result = fetched
        if single is not None:
            if expected is not None:
                _verify_sha256(single, expected)
            if archive_kind(single):
                result = os.path.join(staging, "unpacked")
                os.mkdir(result)
                unpack(single, result, limits)
        files, nbytes = _tree_size(result)
        if files == 0:
            what = redact(uri) if result == fetched else f"archive {os.path.basename(single or '')}"
            raise StorageError(f"{what} holds no files")
        _merge_into(result, dest)
        return dest, files, nbytes
    except OSError as e:
        raise StorageError(f"cannot write to destination {dest}: {os_reason(e)}") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _fetcher(uri: str) -> Callable[[str, str, bool, Budget], str | None]:
    """The scheme module's fetch(), imported now (with its third-party package) and not before."""
    name = scheme(uri)
    if name == "gs":
        raise StorageError(_GS)
    if name not in _FETCHERS:
        raise StorageError(
            f"unsupported URI scheme '{name}://' in {redact(uri)}: use s3://, https://, http://, file:// or a local path"
        )
    module, package = _FETCHERS[name]
    try:
        return importlib.import_module(f"{__package__}.{module}").fetch
    except ImportError:
        raise StorageError(f"{name}:// needs the {package} package, which is not installed") from None


def _merge_into(src: str, dst: str) -> None:
    """Move the contents of src into dst with os.replace, merging directories that already exist."""
    for name in sorted(os.listdir(src)):
        s, d = os.path.join(src, name), os.path.join(dst, name)
        s_is_dir = os.path.isdir(s) and not os.path.islink(s)
        d_is_dir = os.path.isdir(d) and not os.path.islink(d)
        if s_is_dir and d_is_dir:
            _merge_into(s, d)
            continue
        if d_is_dir:
            shutil.rmtree(d)
        elif s_is_dir and os.path.lexists(d):
            os.remove(d)
        os.replace(s, d)


def _tree_size(root: str) -> tuple[int, int]:
    files = nbytes = 0
    for dirpath, _dirs, names in os.walk(root):
        for name in names:
            files += 1
            nbytes += os.lstat(os.path.join(dirpath, name)).st_size
    return files, nbytes


def _split_sha256_fragment(uri: str) -> tuple[str, str | None]:
    m = re.fullmatch(r"(.*)#sha256=([0-9A-Fa-f]{64})", uri, flags=re.S)
    return (m.group(1), m.group(2).lower()) if m else (uri, None)


def _normalise_sha256(given: str | None, from_fragment: str | None) -> str | None:
    if given is not None:
        given = given.strip().lower()
        if not re.fullmatch(r"[0-9a-f]{64}", given):
            raise StorageError("sha256 must be 64 hexadecimal digits")
        if from_fragment and from_fragment != given:
            raise StorageError("the sha256 argument and the URI's #sha256= fragment disagree")
        return given
    return from_fragment


def _verify_sha256(path: str, expected: str) -> None:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            h.update(chunk)
    if h.hexdigest() != expected:
        raise StorageError(f"sha256 mismatch for {os.path.basename(path)}: expected {expected}, got {h.hexdigest()}")
