"""In-place model updates (model_poll_interval): each serving process looks at model_uri every so many seconds and,
when the model there changed, loads the new version beside the one serving and swaps it in for new requests.

    look at the source (cheap) -> fetch its files -> inspect them, check the signature, build the pool, warm-up
    inference, model_check_input -> swap -> the old pool released once the requests still on it have finished

Where a look goes:
- a remote model_uri, or model_update_uri (the source a local model_uri was copied from): through the node's
  model cache (storage.ModelCache), so a look is one conditional request (the S3 listing's ETag, an HTTP
  If-None-Match) and a new version crosses the link once per node: the first process to see it downloads it
  into the cache (resumable, verified), the others (other workers, other pods of the node) copy it from there;
- a local file or directory: the model file's (and an OpenVINO IR's weights') inode, size and modification time,
  and when they change, its sha256.

A failed update (download, verification, inspection, a signature the server was not built for, the pool, the
warm-up, model_check_input) leaves the version serving as it was, writes one line and adds 1 to
edgeservers_model_update_failures_total. That version is not tried again until the source changes again; only
a download that did not complete is tried at each look (it resumes where it stopped), and counted once. A source
that cannot be reached is no failure: the server keeps serving and says so once.
"""

from __future__ import annotations

import datetime
import gc
import hashlib
import logging
import shutil
import tempfile
import threading
import time
import weakref
from abc import ABC, abstractmethod
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from .. import storage
from ..errors import ModelLoadError
from ..metrics import UPDATE_FAILURES, counter
from ..process_tuning import return_free_memory
from ..runtimes.base import ModelSignature, TensorSpec
from ..settings import Settings
from .modelfiles import find_model, model_provenance
from .version import ModelVersion

log = logging.getLogger(__name__)

LOCAL = "local"  # model_source of a version read from a local path
RELEASE_WAIT = 30.0  # seconds the updater waits for the requests still on the old pool before it stops waiting


class SourceUnavailable(Exception):
    """The source cannot be looked at now (unreachable, or no model to be found there): no update, no failure."""


@dataclass(frozen=True)
class Candidate:
    """A new version's files: `path` as model_uri would name them (a file, or a directory holding one); `owned`
    when this process made the copy for the update (removed once the version is released)."""

    path: Path
    provenance: dict[str, str]
    owned: bool = False

    @property
    def version(self) -> str:
        return self.provenance.get("model_version", "")

    def discard(self) -> None:
        if self.owned:
            shutil.rmtree(self.path, ignore_errors=True)


class ModelSource(ABC):
    """Where updates come from."""

    @abstractmethod
    def baseline(self) -> dict[str, str]:
        """The provenance of the version the server starts with."""

    @abstractmethod
    def look(self, live: str) -> Hashable | None:
        """What names the source's version when it is not `live` (the version serving), else None. Raises
        SourceUnavailable, or StorageError for a source that refuses the look (a missing object, credentials)."""

    @abstractmethod
    def fetch(self) -> Candidate:
        """The files of the version the last look saw (StorageError when they cannot be had)."""


class LocalSource(ModelSource):
    """A local file or directory, as model_uri names it."""

    def __init__(self, path: Path, suffixes: Sequence[str]):
        self.path = path
        self.suffixes = suffixes
        self._stat: tuple = ()
        self._provenance: dict[str, str] = {}

    def baseline(self) -> dict[str, str]:
        self._refresh()
        return dict(self._provenance)

    def look(self, live: str) -> Hashable | None:
        self._refresh()
        version = self._provenance["model_version"]
        return None if version == live else version

    def fetch(self) -> Candidate:
        return Candidate(self.path, dict(self._provenance))

    def _refresh(self) -> None:
        """Hash the model's files again when their inode, size or modification time changed."""
        try:
            model = find_model(self.path, self.suffixes)
            files = [model, model.with_suffix(".bin")] if model.suffix.lower() == ".xml" else [model]
            stats = [f.stat() for f in files]
            stat = tuple((str(f), s.st_ino, s.st_size, s.st_mtime_ns) for f, s in zip(files, stats))
            if stat != self._stat:
                written = max(s.st_mtime for s in stats)
                self._provenance = {
                    "model_version": _version(files),
                    "model_source": LOCAL,
                    "model_fetched_at": datetime.datetime.fromtimestamp(written, datetime.UTC).strftime(
                        "%Y-%m-%dT%H:%M:%SZ"
                    ),
                }
                self._stat = stat
        except (ModelLoadError, OSError) as e:  # between a delete and a rename, or no model at all
            raise SourceUnavailable(f"{self.path}: {e}") from None


def _version(files: Sequence[Path]) -> str:
    """The sha256 prefix of one file, or of the `sha256sum` listing of several (the model cache's rule)."""
    digests = []
    for path in files:
        with open(path, "rb") as f:
            digests.append(hashlib.file_digest(f, "sha256").hexdigest())
    if len(digests) == 1:
        return digests[0][:12]
    listing = "".join(f"{d}  {p.name}\n" for d, p in sorted(zip(digests, files), key=lambda x: x[1].name))
    return hashlib.sha256(listing.encode()).hexdigest()[:12]


class RemoteSource(ModelSource):
    """A remote model_uri, through the node's model cache in `cache_dir`; `model_dir` holds the files the
    server started with (and their manifest)."""

    def __init__(self, uri: str, cache_dir: str, model_dir: Path):
        self.uri = uri
        self.cache_dir = cache_dir
        self.model_dir = model_dir
        self.cache = storage.ModelCache(cache_dir, storage.Limits.resolve())

    def baseline(self) -> dict[str, str]:
        return model_provenance(self.model_dir)

    def look(self, live: str) -> Hashable | None:
        check = self.cache.check(self.uri)
        if check.state == storage.UNREACHABLE:
            raise SourceUnavailable(check.detail)
        if check.state == storage.CHANGED:
            return check.source or check.detail
        entry = self.cache.cached(self.uri)  # unchanged since the cache fetched it: is that what this process serves?
        return None if entry is None or entry.version == live else entry.source

    def fetch(self) -> Candidate:
        directory = tempfile.mkdtemp(prefix="edgeservers-model-")
        try:
            provided = storage.provide(self.uri, directory, self.cache_dir)
        except BaseException:
            shutil.rmtree(directory, ignore_errors=True)
            raise
        return Candidate(Path(directory), provided.manifest.describe(), owned=True)


def model_source(settings: Settings, model_dir: Path, suffixes: Sequence[str]) -> ModelSource | None:
    """Where this server's updates come from (`model_dir`: the files it starts with); None when
    model_poll_interval is 0."""
    if not settings.model_poll_interval:
        return None
    source = getattr(settings, settings.updates_from)
    if storage.is_remote(source):  # with model_cache_dir (Settings checks it)
        return RemoteSource(source, settings.model_cache_dir, model_dir)
    return LocalSource(model_dir, suffixes)


def signature_change(built: ModelSignature, new: ModelSignature) -> str:
    """What differs between the tensors the server was built for and a new version's."""
    changes = [
        f"{kind} {_tensors(before)} became {_tensors(after)}"
        for kind, before, after in (("inputs", built.inputs, new.inputs), ("outputs", built.outputs, new.outputs))
        if before != after
    ]
    return (
        f"its tensors differ from those this server was built for: {'; '.join(changes)}. The pre- and "
        "post-processing, metadata and request limits follow the first model: restart the server to serve this one"
    )


def _tensors(specs: Sequence[TensorSpec]) -> str:
    def one(spec: TensorSpec) -> str:
        q = spec.quantization
        return f"{spec.name} {spec.dtype.name} {list(spec.shape)}" + (
            f" (scale {q.scale:g}, zero point {q.zero_point})" if q else ""
        )

    return "[" + ", ".join(one(spec) for spec in specs) + "]"


class Updatable(Protocol):
    """What the updater needs of the model (core/model.py's EdgeModel)."""

    @property
    def live(self) -> ModelVersion: ...

    def prepare_update(self, candidate: Candidate) -> ModelVersion: ...

    def swap(self, version: ModelVersion) -> ModelVersion: ...


class ModelUpdater:
    """The thread of one serving process that looks at `source` every `interval` seconds and updates `model`;
    `hand_over` gives metrics to the server at once (the failure counter)."""

    def __init__(self, source: ModelSource, model: Updatable, interval: float, hand_over: Callable[[list[dict]], None]):
        self.source = source
        self.model = model
        self.interval = interval
        self.hand_over = hand_over
        self._refused: Hashable | None = None  # the source's version that failed: not tried until it changes
        self._incomplete: Hashable | None = None  # the version whose download failed (already counted)
        self._unavailable = False
        self._stop = threading.Event()

    def start(self) -> ModelUpdater:
        threading.Thread(target=self._run, name="model-updates", daemon=True).start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.update()
            except Exception as e:  # never let a surprise end the updates: the model serving is unaffected
                log.error("model update: unexpected %s: %s", type(e).__name__, e)

    def update(self) -> bool:
        """One look at the source, and the update when it changed: True when the new version now serves."""
        live = self.model.live.version
        try:
            seen = self.source.look(live)
        except (SourceUnavailable, storage.StorageError) as e:
            if not self._unavailable:
                log.warning("model update: cannot look at the model's source (%s); still serving version %s", e, live)
            self._unavailable = True
            return False
        if self._unavailable:
            log.info("model update: the model's source can be looked at again")
            self._unavailable = False
        if seen is None or seen == self._refused:
            return False
        started = time.monotonic()
        try:
            candidate = self.source.fetch()
        except (storage.StorageError, OSError) as e:
            if seen != self._incomplete:  # resumed at the next look: counted once
                self._incomplete = seen
                self._failed(live, f"cannot fetch it: {e} (tried again at the next look)")
            return False
        if candidate.version and candidate.version == live:  # the source changed back, or only its date did
            candidate.discard()
            return False
        try:
            version = self.model.prepare_update(candidate)
        except Exception as e:  # ModelLoadError, and whatever else the new files make the runtime raise
            candidate.discard()
            self._refused = seen
            why = str(e) if isinstance(e, ModelLoadError) else f"{type(e).__name__}: {e}"
            self._failed(live, f"version {candidate.version or '?'}: {why}")
            return False
        loaded = time.monotonic() - started
        released = self._swap(version)
        log.info(
            "model update: version %s (%s, fetched %s) serves now in place of version %s; prepared in %.2f s",
            candidate.version,
            candidate.provenance.get("model_source", "?"),
            candidate.provenance.get("model_fetched_at", "?"),
            live,
            loaded,
        )
        self._incomplete = None
        if not released.wait(1.0):  # the requests still on the old version are the last to hold it
            gc.collect()  # in case the old pool sits in a reference cycle
            if not released.wait(RELEASE_WAIT):
                log.warning("model update: requests still run on version %s after %.0f s", live, RELEASE_WAIT)
                return True
        return_free_memory()
        return True

    def _swap(self, version: ModelVersion) -> threading.Event:
        """Serve `version`; the event is set once the old version's pool is gone (its copied files with it)."""
        old = self.model.swap(version)
        released = threading.Event()
        weakref.finalize(old.runtime, _released, old.directory, released)
        return released

    def _failed(self, live: str, why: str) -> None:
        log.warning("model update refused, still serving version %s: %s", live, why)
        self.hand_over([counter(UPDATE_FAILURES)])


def _released(directory: Path | None, released: threading.Event) -> None:
    """Run by whichever thread drops the last reference to an old pool (the last request on it, or the updater)."""
    if directory is not None:
        shutil.rmtree(directory, ignore_errors=True)
    released.set()
