"""s3://bucket/key or s3://bucket/prefix: AWS S3, Ceph RGW, MinIO (and GCS's XML API), with boto3.

Retries are botocore's ("standard" mode, STORAGE_RETRIES + 1 attempts) and s3transfer's for a body
that breaks off; the stall timeout is botocore's read timeout.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

import boto3
from boto3.exceptions import Boto3Error, RetriesExceededError
from boto3.s3.transfer import TransferConfig
from botocore import exceptions as bx
from botocore.config import Config
from s3transfer.exceptions import RetriesExceededError as TransferRetriesExceeded
from s3transfer.exceptions import S3DownloadFailedError

from .common import (
    USER_AGENT,
    Budget,
    Limits,
    StorageError,
    env_flag,
    env_number,
    redact,
    safe_name,
    safe_relpath,
)

# One part at a time: s3transfer's default (10 threads, 8 MiB parts) buffers more than an init container has.
_TRANSFER = TransferConfig(use_threads=False)


def fetch(uri: str, out: str, need_single: bool, budget: Budget) -> str | None:
    """The object `key` alone if it exists, else every object under `key/`; the file, or None for a prefix."""
    bucket, key = _split_bucket(uri)
    client, where = _client(budget.limits)
    try:
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=key)
        entries = ((o["Key"], int(o.get("Size", 0))) for page in pages for o in page.get("Contents", ()))
        plan, single = _plan(uri, key, entries, need_single, budget)
        target = ""
        for obj_key, rel in plan:
            target = os.path.join(out, *rel.split("/"))
            os.makedirs(os.path.dirname(target), exist_ok=True)
            counted = [0]

            def progress(nbytes: int, obj_key: str = obj_key, counted: list[int] = counted) -> None:
                counted[0] += nbytes  # s3transfer reports a retried part with a negative count first
                budget.check(counted[0], f"s3://{bucket}/{obj_key}")

            with open(target, "wb") as f:
                client.download_fileobj(bucket, obj_key, f, Callback=progress, Config=_TRANSFER)
            budget.commit(counted[0])
        return target if single else None
    except (bx.BotoCoreError, bx.ClientError) as e:
        raise _error(e, uri, where, bucket, budget.limits) from None
    except (RetriesExceededError, TransferRetriesExceeded):
        raise StorageError(
            f"connection to S3 endpoint {where} failed while fetching {uri} (gave up after retries)"
        ) from None
    except (Boto3Error, S3DownloadFailedError) as e:
        raise StorageError(f"S3 transfer of {uri} from {where} failed: {e}") from None


def _split_bucket(uri: str) -> tuple[str, str]:
    rest = uri.split("://", 1)[1]
    bucket, _, key = rest.partition("/")
    if not bucket:
        raise StorageError(f"no bucket in {uri}")
    return bucket, key


def _plan(
    uri: str, key: str, entries: Iterable[tuple[str, int]], need_single: bool, budget: Budget
) -> tuple[list[tuple[str, str]], bool]:
    """Which objects to fetch to which relative path, checked against the limits from the listing's
    sizes before anything is fetched. Returns (plan, single)."""
    under = key if key == "" or key.endswith("/") else key + "/"
    children: list[tuple[str, str]] = []
    total = 0
    for name, nbytes in entries:
        if key and name == key and not key.endswith("/"):
            if not safe_name(name):
                raise StorageError(f"cannot tell a file name from {uri}")
            budget.check(nbytes, uri)
            return [(name, safe_name(name))], True
        if name.startswith(under) and not name.endswith("/"):
            children.append((name, safe_relpath(name[len(under) :], f"object key in {uri}")))
            total += nbytes
            if len(children) > budget.limits.max_files:
                raise budget.limits.breach("max_files", f"{uri} holds more than {budget.limits.max_files} objects")
            budget.check(total, uri)
    if not children:
        raise StorageError(f"nothing found at {uri}")
    if need_single:
        raise StorageError(f"a sha256 check needs a single file, but {uri} holds {len(children)} objects")
    return children, False


def _client(limits: Limits) -> tuple[Any, str]:
    return client(limits.stall_timeout)


def client(timeout: float, retries: int | None = None) -> tuple[Any, str]:
    """A boto3 S3 client configured from the environment (endpoint, TLS, region, credentials) and where it
    points, for messages: the model download's, and the servers' for images by reference and uploads.
    `retries` defaults to STORAGE_RETRIES."""
    endpoint = (os.environ.get("AWS_ENDPOINT_URL") or os.environ.get("S3_ENDPOINT") or "").strip()
    if endpoint and "://" not in endpoint:
        https = env_flag("S3_USE_HTTPS", env_flag("USE_SSL", True))
        endpoint = ("https://" if https else "http://") + endpoint
    region = (os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1").strip()
    config = Config(
        connect_timeout=min(timeout, 15.0),
        read_timeout=timeout,
        retries={
            "max_attempts": (int(env_number("STORAGE_RETRIES", 4)) if retries is None else retries) + 1,
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
