"""Uncertain images home: the images `confidence_threshold` marks uncertain, uploaded for retraining.

A prediction never waits for an upload: images go into a bounded queue that one background thread
per worker empties into the `uncertain_store` bucket (the image as received, plus a JSON sidecar
with the model, the answer and the client's tags). When the queue is full the image is dropped and
counted; when the store is unreachable the thread retries the oldest image with capped exponential
backoff, so uploads resume by themselves once it is back. On exit the queue is drained for at most
`DRAIN_SECONDS`.
"""

from __future__ import annotations

import atexit
import json
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from .image_store import ObjectRef

log = logging.getLogger(__name__)

UPLOADED = "edgeservers_uncertain_uploaded_total"
DROPPED = "edgeservers_uncertain_dropped_total"
DRAIN_SECONDS = 5.0
_BACKOFF_S = (0.5, 30.0)  # first wait after a failed upload, and the cap it doubles up to
_SUFFIXES = ((b"\xff\xd8\xff", ".jpg"), (b"\x89PNG\r\n\x1a\n", ".png"), (b"BM", ".bmp"))


@dataclass(frozen=True)
class _Upload:
    image: bytes
    sidecar: dict[str, Any]
    key: str


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
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start this process's upload thread (in each worker, after the wrapper forks)."""
        self._thread = threading.Thread(target=self._run, name="uncertain-uploads", daemon=True)
        self._thread.start()
        atexit.register(self.drain, DRAIN_SECONDS)

    def submit(self, image: bytes, sidecar: dict[str, Any]) -> bool:
        """Queue an image and its sidecar; False (and counted as dropped) when the queue is full."""
        now = datetime.now(UTC)
        name = f"{now:%Y/%m/%d/%H%M%S.%f}-{sidecar['request_id']}"
        try:
            self._queue.put_nowait(_Upload(image, {**sidecar, "time": now.isoformat()}, self._store.key + name))
            return True
        except queue.Full:
            self._count(DROPPED)
            return False

    def drain(self, seconds: float) -> None:
        """Give queued uploads up to `seconds` to finish (called at exit); what is left is counted as dropped."""
        self._stop_at = time.monotonic() + seconds
        deadline = self._stop_at
        while self._queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.05)

    def _run(self) -> None:
        from .storage import s3  # boto3, imported only where S3 is used

        client, _ = s3.client(10.0, retries=1)
        while True:
            item = self._queue.get()
            try:
                self._upload_until_done(client, item)
            finally:
                self._queue.task_done()

    def _upload_until_done(self, client: Any, item: _Upload) -> None:
        wait = _BACKOFF_S[0]
        while True:
            try:
                suffix = image_suffix(item.image)
                client.put_object(Bucket=self._store.bucket, Key=item.key + suffix, Body=item.image)
                sidecar = json.dumps({**item.sidecar, "image": item.key + suffix}, default=str).encode()
                client.put_object(
                    Bucket=self._store.bucket, Key=item.key + ".json", Body=sidecar, ContentType="application/json"
                )
                self._count(UPLOADED)
                return
            except Exception as e:  # any failure of the store: keep the image and retry later
                if time.monotonic() + wait > self._stop_at:
                    self._count(DROPPED)
                    return
                log.warning(
                    "uncertain_store upload to s3://%s/%s failed (%s); retry in %.1f s",
                    self._store.bucket,
                    item.key,
                    type(e).__name__,
                    wait,
                )
                time.sleep(wait)
                wait = min(wait * 2, _BACKOFF_S[1])
