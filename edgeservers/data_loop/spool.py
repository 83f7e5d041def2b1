"""Uncertain images kept on disk until the store takes them: an edge site offline for a day keeps its hard examples
and delivers them when the link returns, across restarts.

With `uncertain_spool_dir` a request still only queues its image in memory (uncertain.py's bounded queue): one
writer thread per worker persists each into the spool, so a slow disk or a dead store never delays an answer.
Each item is one file (a JSON line with the object key and the sidecar, then the image as received), written
under tmp/, fsync'd and renamed into ready/: a crash never leaves half an item in ready/, and what a crashed
write left in tmp/ is removed (at start, and by the uploader later). Names sort oldest first and carry the
item's size, so listing ready/ is enough to know what the spool holds.

Beyond `uncertain_spool_max_files` items or `uncertain_spool_max_bytes`, the oldest items are evicted before a
new one is added (counted: `edgeservers_uncertain_evicted_total`). One uploader thread per worker sends ready/
oldest first under the rules of the in-memory queue (uncertain.Delivery: backoff while the store is
unreachable, a refused item dropped after bounded tries) and deletes each item once it is in the store; at
start it sends what a previous run left. Several processes (REST and gRPC workers, a restarted pod) may share
the directory: an item is uploaded or evicted only by the process that holds its flock, and only while it is
still in ready/, so none is uploaded twice; an upload cut by a crash is tried again under the same key.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import ModelLoadError
from ..settings import Settings
from .image_store import ObjectRef
from .uncertain import DROPPED, Delivery, UncertainQueue, UncertainUploader, Upload

log = logging.getLogger(__name__)

EVICTED = "edgeservers_uncertain_evicted_total"
READY, TMP = "ready", "tmp"
SUFFIX = ".item"
_STALE_TMP_S = 60.0  # a write takes milliseconds: a file this old in tmp/ was left by a crash
_IDLE_SCAN_S = 5.0  # how often an idle uploader looks for items other processes wrote


def item_size(name: str) -> int:
    """The size in bytes an item's name carries (<time_ns>-<token>-<size>.item); 0 for a name not ours."""
    try:
        return int(name.removesuffix(SUFFIX).rsplit("-", 1)[1])
    except (IndexError, ValueError):
        return 0


def encode(item: Upload) -> bytes:
    """An item as one file: a JSON line (object key, sidecar), then the image's bytes."""
    header = json.dumps({"key": item.key, "sidecar": item.sidecar}, default=str, separators=(",", ":"))
    return header.encode() + b"\n" + item.image


def decode(data: bytes) -> Upload:
    """The item a spool file holds (ValueError when it is not one)."""
    header, newline, image = data.partition(b"\n")
    doc = json.loads(header) if newline else None
    if not isinstance(doc, dict) or not isinstance(doc.get("key"), str) or not isinstance(doc.get("sidecar"), dict):
        raise ValueError("not a spooled item")
    return Upload(image, doc["sidecar"], doc["key"])


def prepare(directory: Path) -> tuple[int, int]:
    """Create the spool's folders, check they are writable and remove what crashed writes left; (items, bytes)
    waiting in ready/. An OSError says what is wrong."""
    for sub in (READY, TMP):
        (directory / sub).mkdir(parents=True, exist_ok=True)
    probe = directory / TMP / f".probe-{os.getpid()}-{uuid.uuid4().hex}"
    probe.write_bytes(b"")
    probe.unlink()
    remove_stale(directory / TMP)
    names = ready_items(directory / READY)
    return len(names), sum(item_size(n) for n in names)


def ready_items(ready: Path) -> list[str]:
    """The names of the items in ready/, oldest first."""
    return sorted(n for n in os.listdir(ready) if n.endswith(SUFFIX))


def remove_stale(tmp: Path) -> None:
    """Remove half-written items (older than _STALE_TMP_S: not a write under way in another process)."""
    now = time.time()
    for entry in os.scandir(tmp):
        try:
            if now - entry.stat().st_mtime > _STALE_TMP_S:
                os.unlink(entry.path)
                log.info("uncertain_spool_dir: removed %s, left half-written by a crash", entry.name)
        except FileNotFoundError:
            pass


class UncertainSpool(UncertainQueue):
    """The in-memory queue emptied into a directory on disk, and the thread that uploads from it."""

    thread_name = "uncertain-spool"
    unfinished = "written to uncertain_spool_dir"

    def __init__(
        self,
        store: ObjectRef,
        directory: Path,
        max_bytes: int,
        max_files: int,
        queue_size: int,
        count: Callable[[str], None],
    ):
        super().__init__(store, queue_size, count)
        self._ready, self._tmp = directory / READY, directory / TMP
        self._max_bytes, self._max_files = max_bytes, max_files
        self._delivery = Delivery(store)
        self._written = threading.Event()  # wakes an idle uploader
        self._failing = False  # a write failed and was said; the next failure is not said again

    def start(self) -> None:
        super().start()
        threading.Thread(target=self._upload_all, name="uncertain-spool-uploads", daemon=True).start()

    # --- the writer: queue -> ready/

    def handle(self, item: Upload) -> str | None:
        """Write one item into ready/, evicting the oldest beyond the caps first; DROPPED when it cannot be."""
        data = encode(item)
        if len(data) > self._max_bytes:
            log.warning(
                "uncertain_spool_dir: an image of %d bytes is over uncertain_spool_max_bytes=%d (dropped)",
                len(data),
                self._max_bytes,
            )
            return DROPPED
        name = f"{time.time_ns():020d}-{uuid.uuid4().hex[:12]}-{len(data)}{SUFFIX}"
        try:
            with open(self._tmp / name, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            self._make_room(len(data))
            os.rename(self._tmp / name, self._ready / name)
            _fsync_dir(self._ready)
        except OSError as e:
            if not self._failing:
                log.warning("uncertain_spool_dir: cannot write %s (%s): dropped until writes work again", name, e)
            self._failing = True
            try:
                os.unlink(self._tmp / name)
            except OSError:
                pass
            return DROPPED
        self._failing = False
        self._written.set()
        return None

    def _make_room(self, size: int) -> None:
        """Evict the oldest items (not one being uploaded) until one more of `size` bytes fits the caps."""
        names = ready_items(self._ready)
        held, total = len(names), sum(item_size(n) for n in names)
        for name in names:
            if held < self._max_files and total + size <= self._max_bytes:
                return
            outcome = self._remove(name)
            if outcome is not None:
                held, total = held - 1, total - item_size(name)
                if outcome:
                    self._count(EVICTED)

    def _remove(self, name: str) -> bool | None:
        """Delete an item no process is uploading: True when this call deleted it, False when it was already
        gone, None when it is being uploaded (left in place)."""
        path = self._ready / name
        with _Claim(path) as claimed:
            if claimed is None:
                return False
            if not claimed:
                return None
            os.unlink(path)
            return True

    # --- the uploader: ready/ -> the store

    def _upload_all(self) -> None:
        """Upload what is in ready/, oldest first, for as long as the process runs."""
        while True:
            done = [self._upload(name) for name in ready_items(self._ready)]
            if not any(done):  # nothing there, or only items other processes are uploading
                remove_stale(self._tmp)
                self._written.wait(_IDLE_SCAN_S)
                self._written.clear()

    def _upload(self, name: str) -> bool:
        """Upload one item and delete it (or drop it, counted); False when there was nothing for this process to do."""
        path = self._ready / name
        with _Claim(path) as claimed:
            if not claimed:  # uploaded or evicted meanwhile, or another process is uploading it
                return False
            try:
                item = decode(path.read_bytes())
            except ValueError:
                log.warning("uncertain_spool_dir: %s is not a spooled item (removed)", name)
                outcome = DROPPED
            else:
                outcome = self._delivery.put(item)  # waits out an unreachable store, holding the claim
            os.unlink(path)
            self._count(outcome)
            return True


class _Claim:
    """An exclusive, non-blocking flock on an item in ready/: True while this process holds it and the item is
    still there, False when another process holds it, None when the item is gone. The lock ends with the
    process, so a crashed uploader's item is free for the next."""

    def __init__(self, path: Path):
        self._path = path
        self._fd: int | None = None

    def __enter__(self) -> bool | None:
        try:
            self._fd = os.open(self._path, os.O_RDONLY)
        except FileNotFoundError:
            return None
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        # Names are never reused: the item is still there if its path is (unlinked by its holder otherwise).
        return True if self._path.exists() else None

    def __exit__(self, *exc: Any) -> None:
        if self._fd is not None:
            os.close(self._fd)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def uncertain_sender(store: ObjectRef, settings: Settings, count: Callable[[str], None]) -> UncertainQueue:
    """Where uncertain images go: the spool when uncertain_spool_dir is set (prepared here, at start: a directory
    that cannot be written stops the server with one line), else the in-memory queue straight to the store."""
    if not settings.uncertain_spool_dir:
        return UncertainUploader(store, settings.uncertain_queue_size, count)
    directory = Path(settings.uncertain_spool_dir)
    try:
        items, size = prepare(directory)
    except OSError as e:
        raise ModelLoadError(
            f"parameter uncertain_spool_dir={settings.uncertain_spool_dir}: cannot write there "
            f"({e.strerror or e}): mount a writable volume there"
        ) from None
    if items:
        log.info("uncertain_spool_dir: %d images (%.1f MiB) wait for upload from before", items, size / 2**20)
    return UncertainSpool(
        store,
        directory,
        settings.uncertain_spool_max_bytes,
        settings.uncertain_spool_max_files,
        settings.uncertain_queue_size,
        count,
    )
