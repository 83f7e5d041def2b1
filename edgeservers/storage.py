"""Fetch a model into a local directory: the storage initializer of the edge servers.

    python -m edgeservers.storage <model_uri> <dest_dir> [--sha256 HEX]

is the ENTRYPOINT of the storage-initializer image (Seldon's operator runs it as the init container
with `<model_uri> /mnt/models`); the model servers call `download(uri, dest_dir)` from load() when
`is_remote(model_uri)`.

Schemes: s3:// (AWS, Ceph RGW, MinIO; boto3), gs:// (google-cloud-storage, only if installed),
https:// and http:// (one file, stdlib urllib), file:// and local paths (a file or a directory).
A single fetched `.zip`, `.tar`, `.tar.gz` or `.tgz` is unpacked into the destination and not kept.

Rules:
- Everything is fetched into a hidden staging directory inside dest (`.partial-*`) and moved into place
  with os.replace only when complete, so a failed or interrupted download never looks like a model.
- Archive entries that would land outside dest (absolute paths, `..`, links pointing out, anything
  written through a link) are refused before anything is extracted; so are S3/GCS keys with `..`.
- Transient failures (connection refused or dropped, timeouts, HTTP 408/429/5xx) are retried with
  exponential backoff; 4xx answers are not. S3 retries are botocore's own ("standard" mode).
- `sha256` (or a `#sha256=<hex>` fragment on the URI) checks a single-file download before it is
  moved into place or unpacked.
- Credentials come only from the environment and never appear in messages: every StorageError is one
  line, with URL user-info, query strings and the values of secret variables removed.

Environment: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN), AWS_ENDPOINT_URL or
S3_ENDPOINT (host[:port] without a scheme means https unless S3_USE_HTTPS or USE_SSL is "0"),
S3_VERIFY_SSL ("0" disables certificate checks; AWS_CA_BUNDLE names a CA file), AWS_REGION or
AWS_DEFAULT_REGION; GOOGLE_APPLICATION_CREDENTIALS for gs:// (anonymous access without it);
STORAGE_RETRIES (default 4), STORAGE_RETRY_DELAY (first backoff in seconds, default 1, doubling,
at most 30), STORAGE_TIMEOUT (socket timeout in seconds, default 60).

Only the standard library is imported at module level: this file also runs alone in the small
storage-initializer image.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import http.client
import logging
import os
import posixpath
import re
import shutil
import signal
import ssl
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
import zlib
from typing import Any, Callable, Iterable, TypeVar

__all__ = ["StorageError", "download", "is_remote", "main", "s3_client"]

log = logging.getLogger("edgeservers.storage")

REMOTE_SCHEMES = ("s3", "gs", "http", "https")
PARTIAL_PREFIX = ".partial-"
_USER_AGENT = "edgeservers-storage/1"
_CHUNK = 1 << 20
_SECRET_ENV = ("AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID", "AWS_SESSION_TOKEN")
_FALSE = ("0", "false", "no", "off")

T = TypeVar("T")


class StorageError(Exception):
    """A download failed. The message is one line, meant for humans, and never holds credentials."""

    def __init__(self, message: str) -> None:
        super().__init__(_scrub(message))


class _Transient(StorageError):
    """A failure worth retrying: connection refused or dropped, timeout, HTTP 408/425/429/5xx."""


# ---------------------------------------------------------------------------------------------
# Public API


def is_remote(uri: str) -> bool:
    """True when `uri` must be fetched (s3://, gs://, http(s)://); False for local paths and file://."""
    return _scheme(uri) in REMOTE_SCHEMES


def download(uri: str, dest_dir: str, sha256: str | None = None) -> str:
    """Fetch `uri` into `dest_dir` (created if missing) and return `dest_dir`.

    A single file keeps its name (an archive is unpacked instead); a directory, S3 prefix or GCS prefix
    keeps its relative layout. Raises StorageError on any failure, leaving no partial file in dest_dir.
    """
    _download(uri, dest_dir, sha256)
    return dest_dir


# ---------------------------------------------------------------------------------------------
# Orchestration


def _download(uri: str, dest_dir: str, sha256: str | None) -> tuple[str, int, int]:
    """download() plus what the CLI reports: (absolute dest, files written, bytes written)."""
    if not isinstance(uri, str) or not uri.strip():
        raise StorageError("no model URI given")
    uri, fragment_sha = _split_sha256_fragment(uri.strip())
    expected = _normalise_sha256(sha256, fragment_sha)
    scheme = _scheme(uri)
    fetch = _FETCHERS.get(scheme)
    if fetch is None:
        raise StorageError(
            f"unsupported URI scheme '{scheme}://' in {_redact(uri)}: "
            "use s3://, gs://, https://, http://, file:// or a local path"
        )
    dest = os.path.abspath(dest_dir)
    try:
        os.makedirs(dest, exist_ok=True)
        staging = tempfile.mkdtemp(prefix=PARTIAL_PREFIX, dir=dest)
    except OSError as e:
        raise StorageError(f"cannot write to destination {dest}: {e.strerror or e}") from None
    try:
        fetched = os.path.join(staging, "fetched")
        os.mkdir(fetched)
        single = fetch(uri, fetched, expected is not None)
        result = fetched
        if single is not None:
            if expected is not None:
                _verify_sha256(single, expected)
            if _archive_kind(single):
                result = os.path.join(staging, "unpacked")
                os.mkdir(result)
                _unpack(single, result)
        files, nbytes = _tree_size(result)
        if files == 0:
            what = f"archive {os.path.basename(single)}" if result != fetched else _redact(uri)
            raise StorageError(f"{what} holds no files")
        _merge_into(result, dest)
        return dest, files, nbytes
    except OSError as e:
        raise StorageError(f"cannot write to destination {dest}: {_os_reason(e)}") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)


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


# ---------------------------------------------------------------------------------------------
# Small helpers


def _scheme(uri: str) -> str:
    m = re.match(r"\s*([A-Za-z][A-Za-z0-9+.-]*)://", uri or "")
    return m.group(1).lower() if m else ""


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
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    if h.hexdigest() != expected:
        raise StorageError(
            f"sha256 mismatch for {os.path.basename(path)}: expected {expected}, got {h.hexdigest()}"
        )


def _redact(uri: str) -> str:
    """The URI without user-info, query string or fragment (presigned URLs carry signatures there)."""
    if not _scheme(uri):
        return uri
    parts = urllib.parse.urlsplit(uri)
    netloc = parts.netloc.rsplit("@", 1)[-1]
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "…" if parts.query else "", ""))


def _scrub(message: str) -> str:
    """One line, without URL user-info or the values of credential variables."""
    text = " ".join(str(message).split())
    text = re.sub(r"(\b[a-zA-Z][a-zA-Z0-9+.-]*://)[^/\s@]+@", r"\1***@", text)
    for name in _SECRET_ENV:
        value = os.environ.get(name, "")
        if len(value) >= 4:
            text = text.replace(value, "***")
    return text


def _env_flag(name: str, default: bool) -> bool:
    raw = os.environ.get(name, "").strip().lower()
    return default if not raw else raw not in _FALSE


def _env_number(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise StorageError(f"{name}={raw!r} is not a number") from None
    if value < 0:
        raise StorageError(f"{name} must not be negative")
    return value


def _timeout() -> float:
    return _env_number("STORAGE_TIMEOUT", 60.0) or 60.0


def _os_reason(e: BaseException) -> str:
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    return str(e) or type(e).__name__


def _safe_name(name: str | None) -> str:
    """A bare file name from a URL path or Content-Disposition, or "" when there is none."""
    if not name:
        return ""
    name = name.replace("\\", "/").rsplit("/", 1)[-1].strip()
    if name in ("", ".", "..") or "\x00" in name:
        return ""
    return name


def _retry(attempt: Callable[[], T], what: str) -> T:
    """Run attempt() again on _Transient, waiting STORAGE_RETRY_DELAY * 2**n seconds (at most 30)."""
    retries = int(_env_number("STORAGE_RETRIES", 4))
    delay = _env_number("STORAGE_RETRY_DELAY", 1.0)
    for n in range(retries + 1):
        try:
            return attempt()
        except _Transient as e:
            if n >= retries:
                raise StorageError(f"{e} (gave up after {n + 1} attempts)") from None
            wait = min(delay * 2**n, 30.0)
            log.warning("%s: %s; retry %d/%d in %.1f s", what, e, n + 1, retries, wait)
            time.sleep(wait)
    raise AssertionError("unreachable")


def _safe_relpath(name: str, what: str) -> str:
    """`name` (an archive entry or object key) as a normalised relative path that stays inside dest."""
    n = name.replace("\\", "/")
    if n.startswith("/") or re.match(r"[A-Za-z]:", n):
        raise StorageError(f"refused {what}: entry '{name}' has an absolute path")
    parts = [p for p in n.split("/") if p not in ("", ".")]
    if ".." in parts:
        rel = posixpath.normpath("/".join(parts))
        where = "would land outside the destination" if rel == ".." or rel.startswith("../") else "has a '..' component"
        raise StorageError(f"refused {what}: entry '{name}' {where}")
    return "/".join(parts)


def _prefixes(rel: str) -> Iterable[str]:
    parts = rel.split("/")
    for i in range(1, len(parts)):
        yield "/".join(parts[:i])


# ---------------------------------------------------------------------------------------------
# Local paths and file://


def _local_path(uri: str) -> str:
    if _scheme(uri) == "file":
        parts = urllib.parse.urlsplit(uri)
        path = parts.path if parts.netloc in ("", "localhost") else parts.netloc + parts.path
        path = urllib.parse.unquote(path)
    else:
        path = os.path.expanduser(uri)
    return os.path.abspath(path)


def _fetch_local(uri: str, out: str, need_single: bool) -> str | None:
    path = _local_path(uri)
    if not os.path.exists(path):
        raise StorageError(f"no such file or directory: {path}")
    try:
        if os.path.isdir(path):
            if need_single:
                raise StorageError(f"a sha256 check needs a single file, but {path} is a directory")
            real_src, real_out = os.path.realpath(path), os.path.realpath(out)
            if os.path.commonpath([real_src, real_out]) == real_src:
                raise StorageError(f"the destination is inside the source directory {path}")
            shutil.copytree(path, out, dirs_exist_ok=True, copy_function=shutil.copyfile)
            return None
        target = os.path.join(out, os.path.basename(path))
        shutil.copyfile(path, target)
        return target
    except shutil.Error as e:
        raise StorageError(f"cannot copy {path}: {e.args[0][0][2] if e.args and e.args[0] else e}") from None
    except OSError as e:
        raise StorageError(f"cannot copy {path}: {_os_reason(e)}") from None


# ---------------------------------------------------------------------------------------------
# http:// and https://


def _retryable_status(code: int) -> bool:
    return code in (408, 425, 429) or (code >= 500 and code not in (501, 505))


def _fetch_http(uri: str, out: str, need_single: bool) -> str:
    shown = _redact(uri)
    try:
        parts = urllib.parse.urlsplit(uri)
        host = parts.hostname
        parts.port  # noqa: B018  # raises ValueError on a bad port
    except ValueError as e:
        raise StorageError(f"bad URL {shown}: {e}") from None
    if not host:
        raise StorageError(f"no host in {shown}")
    url_name = _safe_name(urllib.parse.unquote(parts.path))
    auth = ""
    if parts.username is not None or parts.password is not None:  # https://user:password@host/...: basic auth
        pair = f"{urllib.parse.unquote(parts.username or '')}:{urllib.parse.unquote(parts.password or '')}"
        auth = "Basic " + base64.b64encode(pair.encode()).decode()
        uri = urllib.parse.urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[-1]))

    def attempt() -> str:
        request = urllib.request.Request(uri, headers={"User-Agent": _USER_AGENT})
        if auth:
            request.add_unredirected_header("Authorization", auth)  # never forwarded to a redirect target
        try:
            response = urllib.request.urlopen(request, timeout=_timeout())
        except urllib.error.HTTPError as e:
            e.close()
            message = f"HTTP {e.code} {e.reason} from {shown}"
            raise (_Transient if _retryable_status(e.code) else StorageError)(message) from None
        except urllib.error.URLError as e:
            if isinstance(e.reason, ssl.SSLCertVerificationError):
                raise StorageError(f"TLS certificate of {shown} not trusted: {e.reason.verify_message}") from None
            if isinstance(e.reason, OSError) or isinstance(e.reason, str):
                raise _Transient(f"cannot reach {shown}: {_os_reason(e.reason) if isinstance(e.reason, OSError) else e.reason}") from None
            raise StorageError(f"cannot fetch {shown}: {e.reason}") from None
        except (http.client.InvalidURL, ValueError) as e:
            raise StorageError(f"bad URL {shown}: {e}") from None
        except (OSError, http.client.HTTPException) as e:
            raise _Transient(f"cannot reach {shown}: {_os_reason(e)}") from None
        with response:
            name = _safe_name(response.headers.get_filename()) or url_name
            if not name:
                raise StorageError(f"cannot tell a file name from {shown}: end the URL path with the file name")
            expected: int | None = None
            length = response.headers.get("Content-Length")
            if length and length.strip().isdigit() and not response.headers.get("Content-Encoding"):
                expected = int(length)
            target = os.path.join(out, name)
            got = 0
            with open(target, "wb") as f:
                while True:
                    try:
                        chunk = response.read(_CHUNK)
                    except (OSError, http.client.HTTPException) as e:
                        raise _Transient(
                            f"connection to {shown} failed after {got} bytes: {_os_reason(e)}"
                        ) from None
                    if not chunk:
                        break
                    f.write(chunk)
                    got += len(chunk)
            if expected is not None and got != expected:
                raise _Transient(f"connection to {shown} closed after {got} of {expected} bytes")
            return target

    return _retry(attempt, f"download {shown}")


# ---------------------------------------------------------------------------------------------
# Object stores (s3://, gs://)


def _split_bucket(uri: str) -> tuple[str, str]:
    rest = uri.split("://", 1)[1]
    bucket, _, key = rest.partition("/")
    if not bucket:
        raise StorageError(f"no bucket in {uri}")
    return bucket, key


def _plan(uri: str, key: str, entries: Iterable[tuple[str, Any]], need_single: bool) -> tuple[list[tuple[Any, str]], bool]:
    """Which objects to fetch to which relative path: the object named `key` alone if it exists,
    else every object under `key/` (keeping relative paths). Returns (plan, single)."""
    under = key if key == "" or key.endswith("/") else key + "/"
    children: list[tuple[Any, str]] = []
    for name, obj in entries:
        if key and name == key and not key.endswith("/"):
            if not _safe_name(name):
                raise StorageError(f"cannot tell a file name from {uri}")
            return [(obj, _safe_name(name))], True
        if name.startswith(under) and not name.endswith("/"):
            children.append((obj, _safe_relpath(name[len(under):], f"object key in {uri}")))
    if not children:
        raise StorageError(f"nothing found at {uri}")
    if need_single:
        raise StorageError(f"a sha256 check needs a single file, but {uri} holds {len(children)} objects")
    return children, False


def _target(out: str, rel: str) -> str:
    target = os.path.join(out, *rel.split("/"))
    os.makedirs(os.path.dirname(target), exist_ok=True)
    return target


def s3_client(timeout: float | None = None, retries: int | None = None) -> tuple[Any, str]:
    """A boto3 S3 client configured from the environment (endpoint, TLS, region, credentials), and
    where it points, for messages. `timeout` and `retries` default to STORAGE_TIMEOUT / STORAGE_RETRIES."""
    try:
        import boto3
        from botocore.config import Config
    except ImportError:
        raise StorageError("s3:// needs the boto3 package, which is not installed") from None
    endpoint = (os.environ.get("AWS_ENDPOINT_URL") or os.environ.get("S3_ENDPOINT") or "").strip()
    if endpoint and "://" not in endpoint:
        https = _env_flag("S3_USE_HTTPS", _env_flag("USE_SSL", True))
        endpoint = ("https://" if https else "http://") + endpoint
    region = (os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1").strip()
    timeout = timeout or _timeout()
    retries = int(_env_number("STORAGE_RETRIES", 4)) if retries is None else retries
    config = Config(
        connect_timeout=min(timeout, 15.0),
        read_timeout=timeout,
        retries={"max_attempts": retries + 1, "mode": "standard"},
        user_agent_extra=_USER_AGENT,
    )
    try:
        client = boto3.session.Session().client(
            "s3",
            endpoint_url=endpoint or None,
            region_name=region,
            verify=None if _env_flag("S3_VERIFY_SSL", True) else False,
            config=config,
        )
    except ValueError as e:
        raise StorageError(f"bad S3 settings (endpoint {_redact(endpoint) or 'AWS'}): {e}") from None
    return client, _redact(endpoint) if endpoint else "AWS S3"


def _s3_error(e: Exception, uri: str, where: str, bucket: str) -> StorageError:
    from botocore import exceptions as bx

    if isinstance(e, bx.ClientError):
        err = e.response.get("Error", {})
        code = str(err.get("Code", ""))
        status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code == "NoSuchBucket":
            return StorageError(f"bucket '{bucket}' does not exist on {where}")
        if code in ("NoSuchKey", "404") or status == 404:
            return StorageError(f"{uri} not found on {where}")
        if code in ("AccessDenied", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch") or status == 403:
            return StorageError(
                f"access denied to {uri} on {where} ({code or status}): "
                "check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
            )
        return StorageError(f"S3 error {code or status} for {uri} on {where}: {err.get('Message', '')}")
    if isinstance(e, bx.NoCredentialsError):
        return StorageError(f"no S3 credentials for {uri}: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY")
    if isinstance(e, bx.SSLError):
        return StorageError(
            f"TLS error with S3 endpoint {where}: {e}; give the CA with AWS_CA_BUNDLE or set S3_VERIFY_SSL=0"
        )
    if isinstance(e, (bx.EndpointConnectionError, bx.ConnectTimeoutError)):
        return StorageError(f"cannot reach S3 endpoint {where} (gave up after retries)")
    if isinstance(e, (bx.ReadTimeoutError, bx.ConnectionClosedError, bx.IncompleteReadError, bx.ResponseStreamingError)):
        return StorageError(f"connection to S3 endpoint {where} failed while fetching {uri} (gave up after retries)")
    return StorageError(f"S3 error for {uri} on {where}: {e}")


def _fetch_s3(uri: str, out: str, need_single: bool) -> str | None:
    bucket, key = _split_bucket(uri)
    client, where = s3_client()
    from boto3.exceptions import Boto3Error, RetriesExceededError
    from botocore.exceptions import BotoCoreError, ClientError
    from s3transfer.exceptions import RetriesExceededError as TransferRetriesExceeded
    from s3transfer.exceptions import S3DownloadFailedError

    try:
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=key)
        entries = ((o["Key"], o["Key"]) for page in pages for o in page.get("Contents", ()))
        plan, single = _plan(uri, key, entries, need_single)
        target = ""
        for obj_key, rel in plan:
            target = _target(out, rel)
            with open(target, "wb") as f:
                client.download_fileobj(bucket, obj_key, f)
        return target if single else None
    except (BotoCoreError, ClientError) as e:
        raise _s3_error(e, uri, where, bucket) from None
    except (RetriesExceededError, TransferRetriesExceeded):
        raise StorageError(f"connection to S3 endpoint {where} failed while fetching {uri} (gave up after retries)") from None
    except (Boto3Error, S3DownloadFailedError) as e:
        raise StorageError(f"S3 transfer of {uri} from {where} failed: {e}") from None


def _fetch_gcs(uri: str, out: str, need_single: bool) -> str | None:
    try:
        from google.api_core import exceptions as gx
        from google.auth.exceptions import DefaultCredentialsError, GoogleAuthError
        from google.cloud import storage as gcs
    except ImportError:
        raise StorageError(
            "gs:// needs the google-cloud-storage package, which this installation does not include "
            "(pip install google-cloud-storage, or serve the model over s3:// or https://)"
        ) from None
    bucket, key = _split_bucket(uri)
    try:
        try:
            client = gcs.Client()
        except DefaultCredentialsError:
            client = gcs.Client.create_anonymous_client()
        blobs = client.list_blobs(bucket, prefix=key)
        plan, single = _plan(uri, key, ((b.name, b) for b in blobs), need_single)
        target = ""
        for blob, rel in plan:
            target = _target(out, rel)
            with open(target, "wb") as f:
                blob.download_to_file(f)
        return target if single else None
    except gx.NotFound:
        raise StorageError(f"{uri} not found (no such bucket or object)") from None
    except gx.Forbidden:
        raise StorageError(f"access denied to {uri}: check GOOGLE_APPLICATION_CREDENTIALS") from None
    except (gx.GoogleAPIError, GoogleAuthError) as e:
        raise StorageError(f"GCS error for {uri}: {e}") from None


_FETCHERS: dict[str, Callable[[str, str, bool], str | None]] = {
    "": _fetch_local,
    "file": _fetch_local,
    "http": _fetch_http,
    "https": _fetch_http,
    "s3": _fetch_s3,
    "gs": _fetch_gcs,
}


# ---------------------------------------------------------------------------------------------
# Archives


def _archive_kind(path: str) -> str | None:
    name = os.path.basename(path).lower()
    if name.endswith(".zip"):
        return "zip"
    if name.endswith((".tar", ".tar.gz", ".tgz")):
        return "tar"
    return None


def _unpack(archive: str, out: str) -> None:
    label = f"archive {os.path.basename(archive)}"
    try:
        if _archive_kind(archive) == "zip":
            _unpack_zip(archive, out, label)
        else:
            _unpack_tar(archive, out, label)
    except (tarfile.TarError, zipfile.BadZipFile, zlib.error, EOFError) as e:
        if isinstance(e, getattr(tarfile, "FilterError", ())):
            raise StorageError(f"refused {label}: {e}") from None
        raise StorageError(f"cannot unpack {label}: {e or type(e).__name__}") from None


def _unpack_zip(archive: str, out: str, label: str) -> None:
    with zipfile.ZipFile(archive) as zf:
        for info in zf.infolist():
            _safe_relpath(info.filename, label)
        # zipfile never creates links (a stored symlink becomes a small text file), so checked names are enough.
        zf.extractall(out)


def _unpack_tar(archive: str, out: str, label: str) -> None:
    with tarfile.open(archive, "r:*") as tf:
        members = tf.getmembers()
        rels = [_safe_relpath(m.name, label) for m in members]
        symlinks = {rel for m, rel in zip(members, rels) if m.issym()}

        def through_link(rel: str) -> str | None:
            return next((p for p in _prefixes(rel) if p in symlinks), None)

        for m, rel in zip(members, rels):
            link = through_link(rel)
            if link:
                raise StorageError(f"refused {label}: entry '{m.name}' is written through the link '{link}'")
            if m.issym():
                if m.linkname.startswith("/") or re.match(r"[A-Za-z]:", m.linkname):
                    raise StorageError(f"refused {label}: symlink '{m.name}' points to the absolute path '{m.linkname}'")
                # Walk the target one component at a time: it must never climb out of dest, and never
                # climb ('..') after entering another link, where the lexical and the real path part.
                stack = rel.split("/")[:-1]
                via_link = ""
                for part in m.linkname.replace("\\", "/").split("/"):
                    if part in ("", "."):
                        continue
                    if part != "..":
                        stack.append(part)
                        via_link = via_link or ("/".join(stack) if "/".join(stack) in symlinks else "")
                    elif via_link:
                        raise StorageError(f"refused {label}: symlink '{m.name}' climbs out of the link '{via_link}'")
                    elif not stack:
                        raise StorageError(f"refused {label}: symlink '{m.name}' points outside the destination ('{m.linkname}')")
                    else:
                        stack.pop()
            elif m.islnk():
                try:
                    target = _safe_relpath(m.linkname, label)
                except StorageError:
                    raise StorageError(
                        f"refused {label}: hard link '{m.name}' points outside the destination ('{m.linkname}')"
                    ) from None
                if not target or through_link(target) or target in symlinks:
                    raise StorageError(f"refused {label}: hard link '{m.name}' points through a link ('{m.linkname}')")
            elif not (m.isfile() or m.isdir()):
                raise StorageError(f"refused {label}: entry '{m.name}' is a device or fifo")
        if hasattr(tarfile, "data_filter"):  # PEP 706 (3.11.4+ and distro back-ports): a second line of defence
            tf.extractall(out, members=members, filter="data")
        else:
            tf.extractall(out, members=members)


# ---------------------------------------------------------------------------------------------
# Command line


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]  # one line, not argparse's usage block
        raise _UsageError(message)


def _on_sigterm(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)  # unwinds through the finally that removes the staging directory


def main(argv: list[str] | None = None) -> int:
    prog = "storage-initializer"
    parser = _Parser(
        prog="python -m edgeservers.storage",
        description="Fetch a model (s3://, gs://, https://, http://, file:// or a local path) into a directory.",
        epilog="Credentials and endpoints come from the environment; see storage-initializer/README.md.",
    )
    parser.add_argument("model_uri", help="where the model is; a single .zip/.tar/.tar.gz/.tgz is unpacked")
    parser.add_argument("dest_dir", help="directory to fill (created if missing), e.g. /mnt/models")
    parser.add_argument("--sha256", metavar="HEX", help="expected SHA-256 of a single-file download")
    try:
        args = parser.parse_args(argv)
    except _UsageError as e:
        print(f"{prog}: error: {e} (usage: python -m edgeservers.storage <model_uri> <dest_dir> [--sha256 HEX])", file=sys.stderr)
        return 2

    handler = logging.StreamHandler(sys.stdout)  # retry notes; stderr keeps only the one error line
    handler.setFormatter(logging.Formatter(f"{prog}: %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    if hasattr(signal, "SIGTERM"):
        signal.signal(signal.SIGTERM, _on_sigterm)

    try:
        dest, files, nbytes = _download(args.model_uri, args.dest_dir, args.sha256)
    except StorageError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{prog}: error: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # a bug: still one line (STORAGE_DEBUG=1 re-raises for the traceback)
        if os.environ.get("STORAGE_DEBUG"):
            raise
        print(f"{prog}: error: unexpected {type(e).__name__}: {_scrub(str(e))}", file=sys.stderr)
        return 1
    finally:
        log.removeHandler(handler)
    print(f"{prog}: wrote {files} file{'s' if files != 1 else ''} ({nbytes} bytes) from {_redact(args.model_uri.strip())} to {dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
