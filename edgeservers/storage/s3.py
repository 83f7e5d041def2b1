"""s3://bucket/key or s3://bucket/prefix: AWS S3, Ceph RGW, MinIO (and GCS's XML API), with boto3.

Retries are botocore's ("standard" mode, STORAGE_RETRIES + 1 attempts); a body that breaks off is
resumed with a ranged GET (IfMatch the ETag the listing gave, so an object replaced in between is
refused rather than spliced), up to STORAGE_RETRIES times. The stall timeout is botocore's read
timeout. `probe()` is the model cache's cheap look: the same listing (ETag, size and date of every
object), one request, no retries.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
from collections.abc import Iterable
from typing import Any

import boto3
from boto3.exceptions import Boto3Error
from botocore import exceptions as bx
from botocore.config import Config
from urllib3.exceptions import HTTPError as Urllib3Error

from .common import (
    CHANGED,
    CHUNK,
    UNCHANGED,
    UNREACHABLE,
    USER_AGENT,
    Budget,
    Check,
    Limits,
    Source,
    StorageError,
    env_flag,
    env_number,
    gave_up,
    os_reason,
    redact,
    safe_name,
    safe_relpath,
)
from .partial import Partial

log = logging.getLogger("edgeservers.storage")
# A body that breaks off: these (and urllib3's own) end the stream; the next ranged GET resumes it.
_BROKEN = (bx.IncompleteReadError, bx.ResponseStreamingError, bx.ConnectionClosedError, bx.ReadTimeoutError)


class _Object:
    """One object to fetch: its key, where it goes, and what the listing said about it."""

    def __init__(self, key: str, rel: str, size: int, etag: str, last_modified: str) -> None:
        self.key, self.rel, self.size, self.etag, self.last_modified = key, rel, size, etag, last_modified


def fetch(uri: str, out: Partial, need_single: bool, budget: Budget) -> tuple[str | None, Source]:
    """The object `key` alone if it exists, else every object under `key/`: (the file, or None for a
    prefix; what the listing said). Objects already complete in `out` with the same ETag are kept, a
    partial one is resumed."""
    bucket, key = _split_bucket(uri)
    client, where = _client(budget.limits)
    try:
        plan, single = _plan(uri, key, _listing(client, bucket, key), need_single, budget)
        target = ""
        for obj in plan:
            target = out.path(obj.rel)
            os.makedirs(os.path.dirname(target), exist_ok=True)
            have = out.resume_from(obj.rel, etag=obj.etag, size=obj.size)
            if have != obj.size or not out.get(obj.rel).get("done"):
                out.begin(obj.rel, etag=obj.etag, size=obj.size)
                _get(client, bucket, obj, target, have, budget, f"s3://{bucket}/{obj.key}", where)
                out.begin(obj.rel, etag=obj.etag, size=obj.size, done=True)
            budget.commit(obj.size)
        return (target if single else None), _source_of(plan, single)
    except (bx.BotoCoreError, bx.ClientError) as e:
        raise _error(e, uri, where, bucket, budget.limits) from None
    except Boto3Error as e:
        raise StorageError(f"S3 transfer of {uri} from {where} failed: {e}") from None


def probe(uri: str, known: Source, limits: Limits) -> Check:
    """Have the objects at `uri` changed since `known`? One listing, no retries, each wait bounded by the
    connect timeout. Missing objects, a missing bucket or refused credentials raise, as a download would."""
    bucket, key = _split_bucket(uri)
    client, where = _client(limits, probing=True)
    try:
        plan, single = _plan(uri, key, _listing(client, bucket, key), False, Budget(limits))
    except (bx.ConnectTimeoutError, bx.ReadTimeoutError):
        return Check(UNREACHABLE, f"no answer from S3 endpoint {where} within {limits.connect_timeout:g} s")
    except (bx.EndpointConnectionError, bx.ConnectionClosedError) as e:
        return Check(UNREACHABLE, f"cannot reach S3 endpoint {where}: {os_reason(e)}")
    except bx.ClientError as e:
        status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
        if status >= 500 or status in (408, 429):
            return Check(UNREACHABLE, f"S3 endpoint {where} answered HTTP {status}")
        raise _error(e, uri, where, bucket, limits) from None
    except bx.BotoCoreError as e:
        raise _error(e, uri, where, bucket, limits) from None
    now = _source_of(plan, single)
    if now.etag == known.etag and now.size == known.size:
        return Check(UNCHANGED, f"same ETag from S3 endpoint {where}", known)
    return Check(CHANGED, f"S3 endpoint {where} lists another version", now)


def _listing(client: Any, bucket: str, key: str) -> Iterable[_Object]:
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=key)
    for page in pages:
        for o in page.get("Contents", ()):
            modified = o.get("LastModified")
            yield _Object(
                o["Key"], "", int(o.get("Size", 0)), str(o.get("ETag", "")), modified.isoformat() if modified else ""
            )


def _source_of(plan: list[_Object], single: bool) -> Source:
    """A single object's own ETag and date; for a prefix, a digest of every key, ETag and size listed."""
    if single:
        (obj,) = plan
        return Source(obj.etag, obj.last_modified, obj.size)
    lines = "".join(f"{o.key}\t{o.etag}\t{o.size}\n" for o in sorted(plan, key=lambda o: o.key))
    return Source("listing:" + hashlib.sha256(lines.encode()).hexdigest()[:32], "", sum(o.size for o in plan))


def _get(
    client: Any, bucket: str, obj: _Object, target: str, have: int, budget: Budget, shown: str, where: str
) -> None:
    """GET the object from byte `have` on into `target`, resuming with a ranged GET when the body breaks off."""
    retries = int(env_number("STORAGE_RETRIES", 4))
    attempt = 0
    while True:
        request: dict[str, Any] = {"Bucket": bucket, "Key": obj.key}
        if obj.etag:
            request["IfMatch"] = obj.etag
        if have:
            request["Range"] = f"bytes={have}-"
        try:
            body = client.get_object(**request)["Body"]
            try:
                with open(target, "ab" if have else "wb") as f:
                    for chunk in body.iter_chunks(CHUNK):
                        have += len(chunk)
                        budget.check(have, shown)
                        f.write(chunk)
            finally:
                body.close()
            if have == obj.size:
                return
            failure = f"connection to S3 endpoint {where} closed after {have} of {obj.size} bytes of {shown}"
        except bx.ClientError as e:
            if e.response.get("Error", {}).get("Code") in ("PreconditionFailed", "412"):
                raise StorageError(f"{shown} changed on {where} while it was being fetched: fetch it again") from None
            raise
        except (*_BROKEN, Urllib3Error) as e:
            if isinstance(e, bx.ReadTimeoutError) and attempt >= retries:
                raise
            failure = f"connection to S3 endpoint {where} broke after {have} of {obj.size} bytes of {shown}"
        attempt += 1
        if attempt > retries:
            raise StorageError(f"{failure} ({gave_up(retries + 1)})")
        log.warning("%s; resuming, retry %d/%d", failure, attempt, retries)


def _split_bucket(uri: str) -> tuple[str, str]:
    rest = uri.split("://", 1)[1]
    bucket, _, key = rest.partition("/")
    if not bucket:
        raise StorageError(f"no bucket in {uri}")
    return bucket, key


def _plan(
    uri: str, key: str, entries: Iterable[_Object], need_single: bool, budget: Budget
) -> tuple[list[_Object], bool]:
    """Which objects to fetch to which relative path, checked against the limits from the listing's
    sizes before anything is fetched. Returns (plan, single)."""
    under = key if key == "" or key.endswith("/") else key + "/"
    children: list[_Object] = []
    total = 0
    for obj in entries:
        name = obj.key
        if key and name == key and not key.endswith("/"):
            if not safe_name(name):
                raise StorageError(f"cannot tell a file name from {uri}")
            budget.check(obj.size, uri)
            obj.rel = safe_name(name)
            return [obj], True
        if name.startswith(under) and not name.endswith("/"):
            obj.rel = safe_relpath(name[len(under) :], f"object key in {uri}")
            children.append(obj)
            total += obj.size
            if len(children) > budget.limits.max_files:
                raise budget.limits.breach("max_files", f"{uri} holds more than {budget.limits.max_files} objects")
            budget.check(total, uri)
    if not children:
        raise StorageError(f"nothing found at {uri}")
    if need_single:
        raise StorageError(f"a sha256 check needs a single file, but {uri} holds {len(children)} objects")
    return children, False


def _client(limits: Limits, probing: bool = False) -> tuple[Any, str]:
    """The download's client, or the probe's: no retries, and no wait longer than the connect timeout. Each is
    made once per setting: a server with model_poll_interval probes again and again and downloads every new
    version, and a new boto3 client costs 14 ms of CPU (2-core amd64) under the GIL, more than a listing, and
    leaves megabytes of service model behind for the garbage collector."""
    if probing:
        return _cached_client(limits.connect_timeout, 0, limits.connect_timeout, _environment())
    timeouts = (limits.stall_timeout, None, min(limits.connect_timeout, limits.stall_timeout))
    return _cached_client(*timeouts, _environment())


@functools.lru_cache(maxsize=4)
def _cached_client(
    timeout: float, retries: int | None, connect_timeout: float, environment: tuple[tuple[str, str], ...]
) -> tuple[Any, str]:
    """client(); `environment`, what client() reads of it, is part of the key."""
    return client(timeout, retries=retries, connect_timeout=connect_timeout)


def _environment() -> tuple[tuple[str, str], ...]:
    return tuple(
        sorted((k, v) for k, v in os.environ.items() if k.startswith(("AWS_", "S3_", "STORAGE_")) or k == "USE_SSL")
    )


def endpoint_url() -> str:
    """The S3 endpoint the environment names (AWS_ENDPOINT_URL, else S3_ENDPOINT with S3_USE_HTTPS), "" for AWS."""
    endpoint = (os.environ.get("AWS_ENDPOINT_URL") or os.environ.get("S3_ENDPOINT") or "").strip()
    if endpoint and "://" not in endpoint:
        https = env_flag("S3_USE_HTTPS", env_flag("USE_SSL", True))
        endpoint = ("https://" if https else "http://") + endpoint
    return endpoint


def client(timeout: float, retries: int | None = None, connect_timeout: float | None = None) -> tuple[Any, str]:
    """A boto3 S3 client configured from the environment (endpoint, TLS, region, credentials) and where it
    points, for messages: the model download's, and the servers' for images by reference and uploads.
    `retries` defaults to STORAGE_RETRIES, `connect_timeout` to `timeout` (at most 15 s)."""
    endpoint = endpoint_url()
    region = (os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1").strip()
    config = Config(
        connect_timeout=min(timeout, 15.0) if connect_timeout is None else connect_timeout,
        read_timeout=timeout,
        retries={
            "total_max_attempts": (int(env_number("STORAGE_RETRIES", 4)) if retries is None else retries) + 1,
            "mode": "standard",
        },
        user_agent_extra=USER_AGENT,
    )
    try:
        client = boto3.session.Session().client(
            "s3",
            endpoint_url=endpoint or None,
            region_name=region,
            verify=None if env_flag("S3_VERIFY_SSL", True) else False,
            config=config,
        )
    except ValueError as e:
        raise StorageError(f"bad S3 settings (endpoint {redact(endpoint) or 'AWS'}): {e}") from None
    return client, redact(endpoint) if endpoint else "AWS S3"


def _error(e: Exception, uri: str, where: str, bucket: str, limits: Limits) -> StorageError:
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
    if isinstance(e, bx.ReadTimeoutError):
        return limits.breach(
            "stall_timeout", f"transfer of {uri} from S3 endpoint {where} stalled (gave up after retries)"
        )
    if isinstance(e, (bx.ConnectionClosedError, bx.IncompleteReadError, bx.ResponseStreamingError)):
        return StorageError(f"connection to S3 endpoint {where} failed while fetching {uri} (gave up after retries)")
    return StorageError(f"S3 error for {uri} on {where}: {e}")
