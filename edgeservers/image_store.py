"""Images by reference: an `s3://bucket/key` named in a request (or in an S3 bucket notification) is
fetched from the object store and classified as if its bytes had been sent.

Only objects under a prefix listed in the `image_store` parameter are ever fetched: any other bucket,
key, scheme or host is refused before a single request leaves the server (no server-side request
forgery). Credentials and the endpoint come from the environment the model download uses
(AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL / S3_ENDPOINT, S3_USE_HTTPS,
S3_VERIFY_SSL); one client per process serves every request. An object larger than
`max_request_bytes` is refused from its size, before it is downloaded.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from typing import Any

from .errors import BadRequest, Forbidden, NotFound, TooLarge

# S3 bucket naming rules (lower-case letters, digits, dots and hyphens): anything else, e.g. a host
# with a port or user-info smuggled into the "bucket", is refused.
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
# Requests wait on these fetches: fail fast instead of the model download's patient defaults.
_TIMEOUT_S = 10.0
_RETRIES = 2


@dataclass(frozen=True)
class ObjectRef:
    """One object in the store: s3://bucket/key."""

    bucket: str
    key: str

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


def parse_store(setting: str) -> tuple[ObjectRef, ...]:
    """The `image_store` parameter: comma-separated s3://bucket/prefix/ URIs (a ValueError names a bad one)."""
    prefixes = []
    for uri in (part.strip() for part in setting.split(",")):
        if not uri:
            continue
        ref = _parse(uri)
        if ref is None:
            raise ValueError(f"{uri!r} is not an s3://bucket/prefix/ URI")
        prefixes.append(ref)
    return tuple(prefixes)


def _parse(uri: str) -> ObjectRef | None:
    if not uri.startswith("s3://"):
        return None
    bucket, _, key = uri[len("s3://") :].partition("/")
    if not _BUCKET.fullmatch(bucket) or ".." in key.split("/"):
        return None
    return ObjectRef(bucket, key)


class ImageStore:
    """Fetches images named by URI, only from the allowed prefixes."""

    def __init__(self, prefixes: tuple[ObjectRef, ...], max_bytes: int):
        self._prefixes = prefixes
        self._max_bytes = max_bytes
        self._client: Any = None
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return bool(self._prefixes)

    def check(self, uri: Any) -> ObjectRef:
        """The object `uri` names, if it may be fetched; else a 4xx saying why, before anything is fetched."""
        if not self._prefixes:
            raise BadRequest(
                "images by reference are off: set the image_store parameter to the s3://bucket/prefix/ "
                "the server may read images from"
            )
        if not isinstance(uri, str):
            raise BadRequest(f"image_uri must be a string like s3://bucket/key, got {type(uri).__name__}")
        ref = _parse(uri)
        allowed = ", ".join(p.uri for p in self._prefixes)
        if ref is None:
            raise Forbidden(f"image_uri {uri[:200]!r} is not an s3://bucket/key URI under image_store ({allowed})")
        if not any(ref.bucket == p.bucket and ref.key.startswith(p.key) and ref.key != p.key for p in self._prefixes):
            raise Forbidden(f"image_uri {ref.uri} is outside image_store ({allowed})")
        return ref

    def fetch(self, ref: ObjectRef) -> bytes:
        """The object's bytes (at most max_request_bytes, checked from its size before the download)."""
        from botocore.exceptions import BotoCoreError, ClientError

        client = self._s3()
        try:
            head = client.head_object(Bucket=ref.bucket, Key=ref.key)
            size = int(head.get("ContentLength", 0))
            if size > self._max_bytes:
                raise TooLarge(
                    f"{ref.uri} is {size} bytes; max_request_bytes is {self._max_bytes}: "
                    "raise the parameter for larger images"
                )
            body = client.get_object(Bucket=ref.bucket, Key=ref.key)["Body"]
            data = body.read(self._max_bytes + 1)
            body.close()
        except ClientError as e:
            status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if status == 404:
                raise NotFound(f"{ref.uri} does not exist in the image store") from None
            raise BadRequest(f"cannot read {ref.uri} from the image store: S3 answered {status or e}") from None
        except BotoCoreError as e:
            raise BadRequest(f"cannot read {ref.uri} from the image store: {e}") from None
        if len(data) > self._max_bytes:  # the object grew between HEAD and GET
            raise TooLarge(f"{ref.uri} is over max_request_bytes ({self._max_bytes})")
        return data

    def _s3(self) -> Any:
        from .storage import s3  # boto3, imported only where S3 is used

        with self._lock:
            if self._client is None:
                self._client, _ = s3.client(_TIMEOUT_S, _RETRIES)
            return self._client
