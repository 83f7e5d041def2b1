"""The download itself: staging directory, scheme dispatch, checksum, unpacking, merge into dest; and the
scheme's cheap check of a source (`probe`) for the model cache."""

from __future__ import annotations

import hashlib
import importlib
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass

from .archive import archive_kind, unpack
from .common import CHUNK, Budget, Check, Limits, Source, StorageError, os_reason, redact, scheme
from .partial import Partial

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


@dataclass(frozen=True)
class Fetched:
    """A complete, checked and unpacked download: the directory holding it and what the source said."""

    root: str
    files: int
    nbytes: int
    source: Source
    fetched_sha256: str  # of the single file fetched (an archive before unpacking); "" for a directory or prefix


def parse(uri: str, sha256: str | None) -> tuple[str, str | None]:
    """The URI without its #sha256= fragment, and the expected sha256 (argument or fragment), checked."""
    if not isinstance(uri, str) or not uri.strip():
        raise StorageError("no model URI given")
    uri, fragment_sha = _split_sha256_fragment(uri.strip())
    return uri, _normalise_sha256(sha256, fragment_sha)


def fetch(uri: str, dest_dir: str, sha256: str | None, limits: Limits) -> tuple[str, int, int]:
    """download() plus what the CLI reports: (absolute dest, files written, bytes written)."""
    uri, expected = parse(uri, sha256)
    _fetcher(uri)  # an unsupported scheme fails before anything is written
    dest = os.path.abspath(dest_dir)
    staging = make_staging(dest)
    try:
        got = fetch_tree(uri, staging, expected, limits, Partial(os.path.join(staging, "fetched")))
        merge_into(got.root, dest)
        return dest, got.files, got.nbytes
    except OSError as e:
        raise StorageError(f"cannot write to destination {dest}: {os_reason(e)}") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def make_staging(dest: str) -> str:
    """A hidden staging directory inside `dest` (created if missing): renames from it stay on one filesystem."""
    try:
        os.makedirs(dest, exist_ok=True)
        return tempfile.mkdtemp(prefix=PARTIAL_PREFIX, dir=dest)
    except OSError as e:
        raise StorageError(f"cannot write to destination {dest}: {e.strerror or e}") from None


def fetch_tree(uri: str, staging: str, expected: str | None, limits: Limits, partial: Partial) -> Fetched:
    """Fetch `uri` into `partial` (resuming what it holds), check the sha256, unpack an archive into
    `staging`; the complete tree is `Fetched.root` (inside `partial` or `staging`)."""
    fetcher = _fetcher(uri)
    single, source = fetcher(uri, partial, expected is not None, Budget(limits))
    result, fetched_sha = partial.files, ""
    if single is not None:
        fetched_sha = file_sha256(single)
        if expected is not None and fetched_sha != expected:
            partial.discard(os.path.relpath(single, partial.files).replace(os.sep, "/"))
            raise StorageError(
                f"sha256 mismatch for {os.path.basename(single)}: expected {expected}, got {fetched_sha}"
            )
        if archive_kind(single):
            result = os.path.join(staging, "unpacked")
            os.mkdir(result)
            unpack(single, result, limits)
    files, nbytes = tree_size(result)
    if files == 0:
        what = redact(uri) if result == partial.files else f"archive {os.path.basename(single or '')}"
        raise StorageError(f"{what} holds no files")
    return Fetched(result, files, nbytes, source, fetched_sha)


def probe(uri: str, known: Source, limits: Limits) -> Check:
    """The scheme's cheap check of a remote source against what it said before (see the model cache)."""
    module = importlib.import_module(f"{__package__}.{_FETCHERS[scheme(uri)][0]}")
    return module.probe(uri, known, limits)


def file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def _fetcher(uri: str) -> Callable[[str, Partial, bool, Budget], tuple[str | None, Source]]:
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


def merge_into(src: str, dst: str) -> None:
    """Move the contents of src into dst with os.replace, merging directories that already exist."""
    for name in sorted(os.listdir(src)):
        s, d = os.path.join(src, name), os.path.join(dst, name)
        s_is_dir = os.path.isdir(s) and not os.path.islink(s)
        d_is_dir = os.path.isdir(d) and not os.path.islink(d)
        if s_is_dir and d_is_dir:
            merge_into(s, d)
            continue
        if d_is_dir:
            shutil.rmtree(d)
        elif s_is_dir and os.path.lexists(d):
            os.remove(d)
        os.replace(s, d)


def tree_size(root: str) -> tuple[int, int]:
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
