"""Uncertain images home: the images `confidence_threshold` marks uncertain, uploaded for retraining.

A prediction never waits for an upload: images go into a bounded queue that one background thread
per worker empties into the `uncertain_store` bucket (the image as received, plus a JSON sidecar
with the model, the answer and the client's tags). When the queue is full the image is dropped and
counted; when the store is unreachable the thread retries the oldest image with capped exponential
backoff, so uploads resume by themselves once it is back. An image the store refuses as a client error
(4xx: a key or body it will not take) is dropped after `REFUSED_TRIES`, so no single request can hold
the queue. Object keys hold only safe characters (a client's request_id that is not one is replaced).
On exit the queue is drained for at most `DRAIN_SECONDS`; what is left is counted as dropped. Counts
reach Prometheus as they happen (`count` hands them over at once).
"""

from __future__ import annotations

import atexit
import json
import logging
import queue
import re
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from .image_store import ObjectRef

log = logging.getLogger(__name__)

UPLOADED = "edgeservers_uncertain_uploaded_total"
DROPPED = "edgeservers_uncertain_dropped_total"
DRAIN_SECONDS = 5.0
REFUSED_TRIES = 3  # uploads of one image the store refuses with a 4xx before it is dropped
_BACKOFF_S = (0.5, 30.0)  # first wait after a failed upload, and the cap it doubles up to
_SAFE_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")  # a request_id usable as part of an object key as it is
_RETRIED_CLIENT_ERRORS = (408, 429)  # 4xx that mean "later", not "never"
_SUFFIXES = ((b"\xff\xd8\xff", ".jpg"), (b"\x89PNG\r\n\x1a\n", ".png"), (b"BM", ".bmp"))


@dataclass(frozen=True)
class _Upload:
    image: bytes
    sidecar: dict[str, Any]
    key: str


def key_id(request_id: str) -> str:
    """The request_id as part of an object key: itself when short and made of safe characters, else a new id."""
    return request_id if _SAFE_ID.fullmatch(request_id) else uuid.uuid4().hex


def image_suffix(data: bytes) -> str:
    """The file suffix of an encoded image, from its first bytes."""
    return next((suffix for magic, suffix in _SUFFIXES if data.startswith(magic)), ".bin")


class UncertainUploader:
    """A bounded queue of uncertain images and the thread that uploads them to `store`."""

    def __init__(self, store: ObjectRef, queue_size: int, count: Callable[[str], None]):
        self._store = store
        self._queue: queue.Queue[_Upload] = queue.Queue(maxsize=queue_size)
        self._count = count
        self._stop_at = float("inf")  # monotonic deadline after which retries stop (set on exit)
        self._wake = threading.Event()  # ends a backoff early: the exit is draining
        self._lock = threading.Lock()  # an item's outcome is counted once: by the thread, or by the drain
        self._closed = False
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start this process's upload thread (in each worker, after the wrapper forks)."""
        self._thread = threading.Thread(target=self._run, name="uncertain-uploads", daemon=True)
        self._thread.start()
        atexit.register(self.drain, DRAIN_SECONDS)

    def submit(self, image: bytes, sidecar: dict[str, Any]) -> bool:
        """Queue an image and its sidecar; False (and counted as dropped) when the queue is full."""
        now = datetime.now(UTC)
        name = f"{now:%Y/%m/%d/%H%M%S.%f}-{key_id(sidecar['request_id'])}"
        try:
            self._queue.put_nowait(_Upload(image, {**sidecar, "time": now.isoformat()}, self._store.key + name))
            return True
        except queue.Full:
            self._count(DROPPED)
            return False

    def drain(self, seconds: float) -> None:
        """Give queued uploads up to `seconds` to finish (called at exit); every image not uploaded by then,
        queued or with its upload under way, is counted as dropped and said in one line."""
        self._stop_at = time.monotonic() + seconds
        self._wake.set()
        while self._queue.unfinished_tasks and time.monotonic() < self._stop_at:
            time.sleep(0.05)
        with self._lock:
            left = 0
            while True:
                try:
                    self._queue.get_nowait()
                except queue.Empty:
                    break
                self._queue.task_done()
                left += 1
            left += self._queue.unfinished_tasks  # an upload still waiting on the store
            self._closed = True
        if left:
            log.warning("uncertain_store: %d uncertain images not uploaded at shutdown (dropped)", left)
            for _ in range(left):
                self._count(DROPPED)

    def _run(self) -> None:
        from ..storage import s3  # boto3, imported only where S3 is used

        client, _ = s3.client(10.0, retries=1)
        while True:
            item = self._queue.get()
            outcome = self._upload(client, item)
            with self._lock:
                if not self._closed:
                    self._count(outcome)
                self._queue.task_done()

    def _upload(self, client: Any, item: _Upload) -> str:
        """Upload one image and its sidecar, retrying with backoff: UPLOADED, or DROPPED when the store
        refused it REFUSED_TRIES times or the exit's drain ran out of time."""
        wait, refused = _BACKOFF_S[0], 0
        while True:
            try:
                suffix = image_suffix(item.image)
                client.put_object(Bucket=self._store.bucket, Key=item.key + suffix, Body=item.image)
                sidecar = json.dumps({**item.sidecar, "image": item.key + suffix}, default=str).encode()
                client.put_object(
                    Bucket=self._store.bucket, Key=item.key + ".json", Body=sidecar, ContentType="application/json"
                )
                return UPLOADED
            except Exception as e:  # any failure of the store: keep the image and retry later
                status = _client_error(e)
                refused += status is not None
                if refused >= REFUSED_TRIES:
                    log.warning(
                        "uncertain_store refused s3://%s/%s with %d %d times: dropped",
                        self._store.bucket,
                        item.key,
                        status,
                        refused,
                    )
                    return DROPPED
                if time.monotonic() + wait > self._stop_at:
                    return DROPPED
                log.warning(
                    "uncertain_store upload to s3://%s/%s failed (%s); retry in %.1f s",
                    self._store.bucket,
                    item.key,
                    str(e)[:200] or type(e).__name__,
                    wait,
                )
                self._wake.wait(wait)
                wait = min(wait * 2, _BACKOFF_S[1])


def _client_error(e: Exception) -> int | None:
    """The HTTP status of a store's refusal that retrying will not change (4xx but 408 and 429), else None."""
    response = getattr(e, "response", None)  # botocore's ClientError
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode") if isinstance(response, dict) else None
    if isinstance(status, int) and 400 <= status < 500 and status not in _RETRIED_CLIENT_ERRORS:
        return status
    return None
