"""Uncertain images home: the images `confidence_threshold` marks uncertain, uploaded for retraining.

A prediction never waits for an upload: images go into a bounded queue that one background thread
per worker empties into the `uncertain_store` bucket (the image as received, plus a JSON sidecar
with the model, the answer and the client's tags). When the queue is full the image is dropped and
counted; when the store is unreachable the thread retries the oldest image with capped exponential
backoff, so uploads resume by themselves once it is back. An image the store refuses as a client error
(4xx: a key or body it will not take) is dropped after `REFUSED_TRIES`, so no single request can hold
the queue. Object keys hold only safe characters (a client's request_id that is not one is replaced).
On exit the queue is drained for at most `DRAIN_SECONDS`; what is left is counted as dropped. Counts
reach Prometheus as they happen (`count` hands them over at once). With `uncertain_spool_dir` the same
queue feeds a disk spool instead, and the same upload rules (`Delivery`) empty it (spool.py).
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
class Upload:
    """One uncertain image, its sidecar and its object key (without the suffix), fixed when it was submitted:
    an upload tried again, even by another process after a restart, writes the same objects."""

    image: bytes
    sidecar: dict[str, Any]
    key: str


def key_id(request_id: str) -> str:
    """The request_id as part of an object key: itself when short and made of safe characters, else a new id."""
    return request_id if _SAFE_ID.fullmatch(request_id) else uuid.uuid4().hex


def image_suffix(data: bytes) -> str:
    """The file suffix of an encoded image, from its first bytes."""
    return next((suffix for magic, suffix in _SUFFIXES if data.startswith(magic)), ".bin")


class Delivery:
    """Puts uploads into `store` one at a time, retrying each with backoff while the store is unreachable and
    dropping it once the store has refused it REFUSED_TRIES times: the rules of the queue here and of the disk
    spool (spool.py) alike. One S3 client per process, created in the thread that uploads."""

    def __init__(self, store: ObjectRef):
        self.store = store
        self.stop_at = float("inf")  # monotonic deadline after which retries stop (set on exit)
        self.wake = threading.Event()  # ends a backoff early: the exit is draining
        self._client: Any = None

    def put(self, item: Upload) -> str:
        """Upload one image and its sidecar: UPLOADED, or DROPPED when the store refused it REFUSED_TRIES times or
        `stop_at` came first."""
        if self._client is None:
            from ..storage import s3  # boto3, imported only where S3 is used

            self._client, _ = s3.client(10.0, retries=1)
        bucket = self.store.bucket
        wait, refused = _BACKOFF_S[0], 0
        while True:
            try:
                suffix = image_suffix(item.image)
                self._client.put_object(Bucket=bucket, Key=item.key + suffix, Body=item.image)
                sidecar = json.dumps({**item.sidecar, "image": item.key + suffix}, default=str).encode()
                self._client.put_object(
                    Bucket=bucket, Key=item.key + ".json", Body=sidecar, ContentType="application/json"
                )
                return UPLOADED
            except Exception as e:  # any failure of the store: keep the image and retry later
                status = _client_error(e)
                refused += status is not None
                if refused >= REFUSED_TRIES:
                    log.warning(
                        "uncertain_store refused s3://%s/%s with %d %d times: dropped",
                        bucket,
                        item.key,
                        status,
                        refused,
                    )
                    return DROPPED
                if time.monotonic() + wait > self.stop_at:
                    return DROPPED
                log.warning(
                    "uncertain_store upload to s3://%s/%s failed (%s); retry in %.1f s",
                    bucket,
                    item.key,
                    str(e)[:200] or type(e).__name__,
                    wait,
                )
                self.wake.wait(wait)
                wait = min(wait * 2, _BACKOFF_S[1])


class UncertainQueue:
    """A bounded queue of uncertain images and the thread that empties it, one per worker: `handle` (in a
    subclass) takes each item and says what to count of it. When the queue is full an image is dropped and
    counted; at exit `drain` gives the thread a few seconds and counts what is left as dropped."""

    thread_name = "uncertain"
    unfinished = "uploaded"  # what an image left at exit was not (the line drain writes)

    def __init__(self, store: ObjectRef, queue_size: int, count: Callable[[str], None]):
        self._store = store
        self._queue: queue.Queue[Upload] = queue.Queue(maxsize=queue_size)
        self._count = count
        self._lock = threading.Lock()  # an item's outcome is counted once: by the thread, or by the drain
        self._closed = False
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start this process's thread (in each worker, after the wrapper forks)."""
        self._thread = threading.Thread(target=self._run, name=self.thread_name, daemon=True)
        self._thread.start()
        atexit.register(self.drain, DRAIN_SECONDS)

    def submit(self, image: bytes, sidecar: dict[str, Any]) -> bool:
        """Queue an image and its sidecar; False (and counted as dropped) when the queue is full."""
        now = datetime.now(UTC)
        name = f"{now:%Y/%m/%d/%H%M%S.%f}-{key_id(sidecar['request_id'])}"
        try:
            self._queue.put_nowait(Upload(image, {**sidecar, "time": now.isoformat()}, self._store.key + name))
            return True
        except queue.Full:
            self._count(DROPPED)
            return False

    def handle(self, item: Upload) -> str | None:
        """Take one item off the queue; the counter to add 1 to, if any."""
        raise NotImplementedError

    def stopping(self, deadline: float) -> None:
        """The exit's drain has begun and ends at the monotonic `deadline`: a handler that waits should not."""

    def drain(self, seconds: float) -> None:
        """Give queued images up to `seconds` to be handled (called at exit); every image not handled by then,
        queued or under way, is counted as dropped and said in one line."""
        deadline = time.monotonic() + seconds
        self.stopping(deadline)
        while self._queue.unfinished_tasks and time.monotonic() < deadline:
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
            left += self._queue.unfinished_tasks  # an item still under way (an upload waiting on the store)
            self._closed = True
        if left:
            log.warning("uncertain_store: %d uncertain images not %s at shutdown (dropped)", left, self.unfinished)
            for _ in range(left):
                self._count(DROPPED)

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            outcome = self.handle(item)
            with self._lock:
                if not self._closed and outcome is not None:
                    self._count(outcome)
                self._queue.task_done()


class UncertainUploader(UncertainQueue):
    """The queue emptied straight into `store`, retrying the oldest image while the store is unreachable."""

    thread_name = "uncertain-uploads"

    def __init__(self, store: ObjectRef, queue_size: int, count: Callable[[str], None]):
        super().__init__(store, queue_size, count)
        self._delivery = Delivery(store)

    def handle(self, item: Upload) -> str:
        return self._delivery.put(item)

    def stopping(self, deadline: float) -> None:
        self._delivery.stop_at = deadline
        self._delivery.wake.set()


def _client_error(e: Exception) -> int | None:
    """The HTTP status of a store's refusal that retrying will not change (4xx but 408 and 429), else None."""
    response = getattr(e, "response", None)  # botocore's ClientError
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode") if isinstance(response, dict) else None
    if isinstance(status, int) and 400 <= status < 500 and status not in _RETRIED_CLIENT_ERRORS:
        return status
    return None
