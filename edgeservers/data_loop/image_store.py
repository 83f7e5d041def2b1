"""Images by reference: an `s3://bucket/key` named in a request (or in an S3 bucket notification) is
fetched from the object store and classified as if its bytes had been sent.

Only objects under a prefix listed in the `image_store` parameter are ever fetched: any other bucket,
key, scheme or host is refused before a single request leaves the server (no server-side request
forgery). Credentials and the endpoint come from the environment the model download uses
(AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL / S3_ENDPOINT, S3_USE_HTTPS,
S3_VERIFY_SSL); one client per process serves every request. An object larger than
`max_request_bytes` is refused from its size, before it is downloaded.

A request's object-store work has one deadline, `image_store_timeout` seconds for all of its objects:
each fetch runs on a small pool of threads and the request stops waiting when the deadline passes
(504; 503 when the store is unreachable, 502 when it answers with an error), whatever the store does.
"""

from __future__ import annotations

import re
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any

from ..errors import BadRequest, Forbidden, NotFound, StoreError, TooLarge

# S3 bucket naming rules (lower-case letters, digits, dots and hyphens): anything else, e.g. a host
# with a port or user-info smuggled into the "bucket", is refused.
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_RETRIES = 1  # within the request's deadline
_FETCH_THREADS = 2  # fetches in flight per process; one stuck on a hanging store past its request's deadline
_READ_BYTES = 1 << 20


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
    """Fetches images named by URI, only from the allowed prefixes, within a deadline per request."""

    def __init__(self, prefixes: tuple[ObjectRef, ...], max_bytes: int, timeout: float):
        self._prefixes = prefixes
        self._max_bytes = max_bytes
        self.timeout = timeout
        self._client: Any = None
        self._pool: ThreadPoolExecutor | None = None  # created in the process that fetches (after the fork)
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

    def deadline(self) -> float:
        """The monotonic time by which a request's fetches must be done (start it before the first)."""
        return time.monotonic() + self.timeout

    def fetch(self, ref: ObjectRef, deadline: float) -> bytes:
        """The object's bytes (at most max_request_bytes, checked from its size before the body is read), or
        the store's failure (StoreError, NotFound, TooLarge) once `deadline` passes."""
        future: Future[bytes] = self._fetcher().submit(self._get, ref, deadline)
        try:
            return future.result(timeout=max(0.0, deadline - time.monotonic()))
        except FutureTimeout:
            future.cancel()  # a fetch not yet started; one under way ends by its own timeouts
            raise StoreError(
                f"the image store did not deliver {ref.uri} within image_store_timeout={self.timeout:g} s "
                "(the parameter sets the time for all of a request's images)",
                504,
            ) from None

    def _get(self, ref: ObjectRef, deadline: float) -> bytes:
        from botocore import exceptions as bx

        try:
            response = self._s3().get_object(Bucket=ref.bucket, Key=ref.key)
            size, body = int(response.get("ContentLength", 0)), response["Body"]
            try:
                if size > self._max_bytes:
                    raise TooLarge(
                        f"{ref.uri} is {size} bytes; max_request_bytes is {self._max_bytes}: "
                        "raise the parameter for larger images"
                    )
                chunks: list[bytes] = []
                held = 0
                while held <= self._max_bytes and time.monotonic() < deadline:
                    chunk = body.read(_READ_BYTES)
                    if not chunk:
                        return b"".join(chunks)
                    chunks.append(chunk)
                    held += len(chunk)
            finally:
                body.close()
        except bx.ClientError as e:
            status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if status == 404:
                raise NotFound(f"{ref.uri} does not exist in the image store") from None
            raise StoreError(f"the image store answered {status or e} for {ref.uri}", 502) from None
        except (bx.ConnectTimeoutError, bx.ReadTimeoutError):
            raise StoreError(f"the image store did not answer for {ref.uri} in time", 504) from None
        except (bx.EndpointConnectionError, bx.ConnectionClosedError) as e:
            raise StoreError(f"the image store is unreachable ({type(e).__name__}) for {ref.uri}", 503) from None
        except bx.BotoCoreError as e:
            raise StoreError(f"cannot read {ref.uri} from the image store: {e}", 502) from None
        if held > self._max_bytes:  # the object grew beyond its announced size
            raise TooLarge(f"{ref.uri} is over max_request_bytes ({self._max_bytes})")
        raise StoreError(f"the image store sent {ref.uri} too slowly (image_store_timeout={self.timeout:g} s)", 504)

    def _fetcher(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(_FETCH_THREADS, thread_name_prefix="image-store")
            return self._pool

    def _s3(self) -> Any:
        from ..storage import s3  # boto3, imported only where S3 is used

        with self._lock:
            if self._client is None:
                self._client, _ = s3.client(self.timeout, _RETRIES)
            return self._client
