"""Reading a spool and a versioned bucket, for the spool's tests (component and end to end)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgeservers.data_loop import spool as spool_module
from edgeservers.data_loop.uncertain import Upload


def on_disk(directory: Path) -> dict[str, Upload]:
    """The items in a spool, by name, read as the uploader reads them (one it delivers meanwhile is not there)."""
    ready = directory / spool_module.READY
    items: dict[str, Upload] = {}
    for name in spool_module.ready_items(ready):
        try:
            items[name] = spool_module.decode((ready / name).read_bytes())
        except FileNotFoundError:
            continue
    return items


def versioned(s3: Any, bucket: str) -> None:
    s3.put(bucket, {})
    s3.client.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})


def versions(s3: Any, bucket: str) -> dict[str, int]:
    """How many times each key was written (the bucket keeps every version)."""
    found: dict[str, int] = {}
    for page in s3.client.get_paginator("list_object_versions").paginate(Bucket=bucket):
        for v in page.get("Versions", []):
            found[v["Key"]] = found.get(v["Key"], 0) + 1
    return found
