"""The node-local model cache: a model survives a reboot without its uplink, and an unchanged model is
not downloaded again.

    <cache>/entries/<key>/manifest.json   what the entry holds (below), written before the entry is renamed in
    <cache>/entries/<key>/files/...       the model files
    <cache>/partial/<key>/                a download in progress (see partial.py): the next attempt resumes it
    <cache>/locks/<key>                   flock()ed while a process fetches or uses the entry
    <cache>/.staging-<key>-*              built here, renamed into entries/ (a crash leaves no half entry)

The key is a digest of the normalised URI (scheme and host in lower case; no user-info, query or
fragment, so a presigned URL signed again is the same model; for s3:// also the endpoint). A manifest
holds the sha256 and size of every file, what the source said (ETag, Last-Modified, size), when it was
fetched and, in a model directory, how that directory was filled (`origin`: download, cache,
cache-offline). `provide()` fills a model directory (the initializer's DEST, a server's temporary
directory) through the cache:

- a copy known (in DEST, by its manifest, or in the cache) -> one cheap check of the source
  (core.probe: a conditional GET, an S3 listing) within STORAGE_CONNECT_TIMEOUT;
- unchanged -> the copy is verified (sha256 of every file) and used, no body downloaded;
- changed, or no copy -> downloaded (resumable, under the usual limits) into the cache, verified,
  the entry replaced atomically, copied into DEST;
- unreachable (connection refused or timed out, HTTP 5xx) -> the verified copy is used, origin
  cache-offline; a corrupt copy (sha256 mismatch) fails naming it, and DEST is left without a model.

The cache is bounded by STORAGE_CACHE_MAX: least recently used entries (and stale partial downloads)
go first, never one that another process holds. Standard library only.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from . import core
from .common import CHANGED, UNCHANGED, UNREACHABLE, Check, Limits, Source, StorageError, os_reason, redact, scheme
from .partial import Partial

MANIFEST = ".edgeservers-model.json"  # in a model directory; the cache's entries call theirs manifest.json
DOWNLOAD, CACHE, OFFLINE, IMAGE = "download", "cache", "cache-offline", "image"


@dataclass(frozen=True)
class Manifest:
    """What a model directory or cache entry holds, where it came from and when."""

    uri: str  # redacted: no credentials
    files: dict[str, dict[str, Any]]  # relative path -> {"sha256": hex, "size": bytes}
    source: Source
    fetched_at: str  # UTC, ISO 8601
    fetched_sha256: str = ""  # of the single file fetched (an archive before unpacking)
    origin: str = DOWNLOAD  # how the directory was filled this time
    key: str = ""

    @property
    def version(self) -> str:
        """The model's version: its file's sha256 prefix, or for several files the prefix of the sha256 of
        their `sha256sum` listing (sorted by path)."""
        if len(self.files) == 1:
            return str(next(iter(self.files.values()))["sha256"])[:12]
        listing = "".join(f"{f['sha256']}  {rel}\n" for rel, f in sorted(self.files.items()))
        return hashlib.sha256(listing.encode()).hexdigest()[:12]

    @property
    def nbytes(self) -> int:
        return sum(int(f["size"]) for f in self.files.values())

    def describe(self) -> dict[str, str]:
        """The provenance a server reports: version, where the files came from, when they were fetched."""
        return {"model_version": self.version, "model_source": self.origin, "model_fetched_at": self.fetched_at}

    def verify(self, root: str) -> str | None:
        """None when every file under `root` has its recorded size and sha256, else what is wrong."""
        for rel, f in sorted(self.files.items()):
            path = os.path.join(root, *rel.split("/"))
            try:
                if os.path.getsize(path) != f["size"]:
                    return f"{rel} has {os.path.getsize(path)} bytes instead of {f['size']}"
                if core.file_sha256(path) != f["sha256"]:
                    return f"sha256 mismatch for {rel}"
            except OSError as e:
                return f"{rel}: {os_reason(e)}"
        return None

    def write(self, path: str) -> None:
        """Atomically (a temporary file renamed over it), flushed to disk."""
        doc = dataclasses.asdict(self)
        doc["version"] = self.version
        tmp = f"{path}.tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(doc, f, indent=1, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)

    @classmethod
    def read(cls, path: str) -> Manifest | None:
        """The manifest at `path`, or None when there is none or it cannot be read."""
        try:
            with open(path, encoding="utf-8") as f:
                doc = json.load(f)
            return cls(
                uri=str(doc["uri"]),
                files={str(k): {"sha256": str(v["sha256"]), "size": int(v["size"])} for k, v in doc["files"].items()},
                source=Source(**doc["source"]),
                fetched_at=str(doc["fetched_at"]),
                fetched_sha256=str(doc.get("fetched_sha256", "")),
                origin=str(doc.get("origin", DOWNLOAD)),
                key=str(doc.get("key", "")),
            )
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return None

    @classmethod
    def of_tree(cls, root: str, uri: str, source: Source, fetched_sha256: str = "", origin: str = DOWNLOAD) -> Manifest:
        """The manifest of the files under `root` (hashed now), fetched now."""
        files = {}
        for dirpath, _dirs, names in os.walk(root):
            for name in names:
                path = os.path.join(dirpath, name)
                rel = os.path.relpath(path, root).replace(os.sep, "/")
                if rel != MANIFEST and not os.path.islink(path):
                    files[rel] = {"sha256": core.file_sha256(path), "size": os.path.getsize(path)}
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        return cls(redact(uri), files, source, stamp, fetched_sha256, origin, cache_key(uri) if uri else "")


def provenance(model_path: str) -> Manifest | None:
    """The manifest of a model directory, or of the directory holding a model file; None without one."""
    directory = model_path if os.path.isdir(model_path) else os.path.dirname(model_path)
    return Manifest.read(os.path.join(directory, MANIFEST))


def cache_key(uri: str) -> str:
    """The digest that names a URI's entry: scheme and host in lower case, no user-info, query or
    fragment; for s3:// the endpoint too (the same bucket on two servers is two models)."""
    parts = urllib.parse.urlsplit(uri.strip())
    host = parts.netloc.rsplit("@", 1)[-1].lower()
    where = ""
    if scheme(uri) == "s3":
        from .s3 import endpoint_url  # boto3 is imported with it only when an s3:// URI is cached

        where = endpoint_url().rstrip("/").lower()
    normal = f"{parts.scheme.lower()}://{host}{parts.path}|{where}"
    return hashlib.sha256(normal.encode()).hexdigest()[:32]


@dataclass(frozen=True)
class Provided:
    """What provide() put in a model directory, and the check's answer that decided it."""

    dest: str
    manifest: Manifest
    detail: str = ""

    @property
    def offline(self) -> bool:
        """The source was unreachable: the model is the cached copy, possibly older than the source's."""
        return self.manifest.origin == OFFLINE

    def line(self) -> str:
        """One line for the log: what was used, from where, and (from the cache) when it was fetched."""
        m = self.manifest
        what = f"{len(m.files)} file{'s' if len(m.files) != 1 else ''} ({m.nbytes} bytes)"
        if m.origin == CACHE:
            return f"{m.uri} unchanged ({self.detail}): {what} from the cache in {self.dest} (version {m.version}, fetched {m.fetched_at})"
        if m.origin == OFFLINE:
            return (
                f"{m.uri} unreachable ({self.detail}): using the cached copy fetched {m.fetched_at} "
                f"(version {m.version}), {what} in {self.dest}"
            )
        return f"wrote {what} from {m.uri} to {self.dest} (version {m.version}, kept in the model cache)"


class ModelCache:
    """The cache in one directory. Methods that touch an entry expect its lock (`lock(key)`) to be held,
    except fetch() and check(), which take it."""

    def __init__(self, root: str, limits: Limits) -> None:
        self.root = os.path.abspath(root)
        self.limits = limits
        try:
            for sub in ("entries", "partial", "locks"):
                os.makedirs(os.path.join(self.root, sub), exist_ok=True)
        except OSError as e:
            raise StorageError(
                f"cannot use the model cache {self.root}: {os_reason(e)} (it must be writable by this user: "
                "see --cache-dir and the prepare step in storage-initializer/README.md)"
            ) from None

    @contextlib.contextmanager
    def lock(self, key: str) -> Iterator[None]:
        """Held while a process fetches or copies an entry: another pod's initializer waits, eviction skips it."""
        with open(os.path.join(self.root, "locks", key), "a+b") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def entry(self, key: str) -> str:
        return os.path.join(self.root, "entries", key)

    def files(self, key: str) -> str:
        """The directory of an entry's model files."""
        return os.path.join(self.entry(key), "files")

    def manifest(self, key: str) -> Manifest | None:
        return Manifest.read(os.path.join(self.entry(key), "manifest.json"))

    def check(self, uri: str) -> Check:
        """Has the source changed since the cached entry was fetched? UNCHANGED, CHANGED (also when nothing
        is cached) or UNREACHABLE; no body is downloaded."""
        uri, _ = core.parse(uri, None)
        key = cache_key(uri)
        with self.lock(key):
            known = self.manifest(key)
        if known is None:
            return Check(CHANGED, "nothing cached yet")
        return core.probe(uri, known.source, self.limits)

    def cached(self, uri: str) -> Manifest | None:
        """The manifest of the entry for `uri`, None when nothing is cached for it."""
        uri, _ = core.parse(uri, None)
        key = cache_key(uri)
        with self.lock(key):
            return self.manifest(key)

    def fetch(self, uri: str, sha256: str | None = None) -> tuple[str, Manifest]:
        """The verified entry for `uri` (downloaded when missing, changed or corrupt; the cached copy when
        the source is unreachable): (the directory of its files, its manifest with `origin` set).
        The files stay valid until this entry is replaced or evicted: copy them before the next fetch."""
        uri, expected = core.parse(uri, sha256)
        key = cache_key(uri)
        with self.lock(key):
            known = self.manifest(key)
            if known is not None and expected in (None, known.fetched_sha256):
                check = core.probe(uri, known.source, self.limits)
                if check.state in (UNCHANGED, UNREACHABLE):
                    problem = known.verify(self.files(key))
                    if problem is None:
                        self.touch(key)
                        return self.files(key), dataclasses.replace(known, origin=_origin(check))
                    self.remove(key)
                    if check.state == UNREACHABLE:
                        raise _corrupt(uri, check, [f"cache entry {self.entry(key)}: {problem} (removed)"])
            manifest = self.download(uri, key, expected)
        self.evict(keep=key)
        return self.files(key), manifest

    def download(self, uri: str, key: str, expected: str | None) -> Manifest:
        """Fetch `uri` (resuming a partial download) and put it in place as the entry `key`, replacing
        the one there in one rename."""
        partial = Partial(os.path.join(self.root, "partial", key))
        for leftover in os.listdir(self.root):  # a crash's staging directory of this key (we hold its lock)
            if leftover.startswith(f".staging-{key}-"):
                shutil.rmtree(os.path.join(self.root, leftover), ignore_errors=True)
        staging = tempfile.mkdtemp(prefix=f".staging-{key}-", dir=self.root)
        try:
            got = core.fetch_tree(uri, staging, expected, self.limits, partial)
            built = os.path.join(staging, "entry")
            os.mkdir(built)
            os.replace(got.root, os.path.join(built, "files"))
            manifest = Manifest.of_tree(os.path.join(built, "files"), uri, got.source, got.fetched_sha256)
            manifest.write(os.path.join(built, "manifest.json"))
            if os.path.lexists(self.entry(key)):
                os.replace(self.entry(key), os.path.join(staging, "replaced"))
            os.replace(built, self.entry(key))
            partial.clear()
            return manifest
        except OSError as e:
            raise StorageError(f"cannot write to the model cache {self.root}: {os_reason(e)}") from None
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def touch(self, key: str) -> None:
        """Mark the entry as just used (eviction removes the least recently used first)."""
        with contextlib.suppress(OSError):
            os.utime(self.entry(key))

    def remove(self, key: str) -> None:
        shutil.rmtree(self.entry(key), ignore_errors=True)

    def evict(self, keep: str) -> None:
        """Remove least recently used entries and partial downloads until the cache holds at most
        STORAGE_CACHE_MAX bytes; never `keep`, nor anything another process has locked."""
        items = []  # (last use, bytes, kind, key)
        total = 0
        for kind in ("entries", "partial"):
            for key in os.listdir(os.path.join(self.root, kind)):
                path = os.path.join(self.root, kind, key)
                nbytes = core.tree_size(path)[1]
                total += nbytes
                if key != keep:
                    with contextlib.suppress(OSError):
                        items.append((os.stat(path).st_mtime, nbytes, kind, key))
        for _used, nbytes, kind, key in sorted(items):
            if total <= self.limits.cache_max:
                return
            with open(os.path.join(self.root, "locks", key), "a+b") as f:
                try:
                    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    continue  # in use by another process
                shutil.rmtree(os.path.join(self.root, kind, key), ignore_errors=True)
                total -= nbytes


def provide(uri: str, dest: str, cache_dir: str, sha256: str | None = None, limits: Limits | None = None) -> Provided:
    """Fill the model directory `dest` with `uri` through the cache in `cache_dir` (see the module's
    docstring) and write its manifest there. Raises StorageError as a download would, or when the source
    is unreachable and no verified copy is left."""
    limits = limits or Limits.resolve()
    uri, expected = core.parse(uri, sha256)
    dest = os.path.abspath(dest)
    cache = ModelCache(cache_dir, limits)
    key = cache_key(uri)
    with cache.lock(key):
        held = Manifest.read(os.path.join(dest, MANIFEST))
        held = held if held is not None and held.key == key else None
        entry = cache.manifest(key)
        copies = [m for m in (held, entry) if m is not None and expected in (None, m.fetched_sha256)]
        if copies:
            known = max(copies, key=lambda m: m.fetched_at)
            check = core.probe(uri, known.source, limits)
            if check.state in (UNCHANGED, UNREACHABLE):
                provided = _from_a_copy(cache, key, dest, check, known, held, entry)
                if provided is not None:
                    cache.evict(keep=key)
                    return provided
        manifest = cache.download(uri, key, expected)
        _copy_into(cache.files(key), manifest, dest, held)
    cache.evict(keep=key)
    return Provided(dest, manifest)


def _from_a_copy(
    cache: ModelCache, key: str, dest: str, check: Check, known: Manifest, held: Manifest | None, entry: Manifest | None
) -> Provided | None:
    """The first verified copy: DEST's own, else the cache entry's (copied into DEST). None when the
    source should be downloaded instead; StorageError when it is unreachable and every copy is corrupt."""
    problems = []
    for where, manifest, root in (
        (f"model directory {dest}", held, dest),
        (f"cache entry {cache.entry(key)}", entry, cache.files(key)),
    ):
        if manifest is None or (check.state == UNCHANGED and manifest.source != known.source):
            continue  # nothing there, or an older version than the source's
        problem = manifest.verify(root)
        if problem is None:
            used = dataclasses.replace(manifest, origin=_origin(check))
            if root == dest:
                used.write(os.path.join(dest, MANIFEST))
            else:
                _copy_into(root, used, dest, held)
                cache.touch(key)
            return Provided(dest, used, check.detail)
        problems.append(f"{where}: {problem}")
        if root != dest:
            cache.remove(key)
            problems[-1] += " (removed)"
    if check.state == UNREACHABLE and problems:
        _clear(dest, held)
        raise _corrupt(known.uri, check, problems)
    return None


def _origin(check: Check) -> str:
    return CACHE if check.state == UNCHANGED else OFFLINE


def _corrupt(uri: str, check: Check, problems: list[str]) -> StorageError:
    return StorageError(
        f"{redact(uri)} is unreachable ({check.detail}) and the cached copy is corrupt: {'; '.join(problems)}"
    )


def _copy_into(root: str, manifest: Manifest, dest: str, held: Manifest | None) -> None:
    """Make `dest` hold exactly the files of `manifest` (from `root`) in place of `held`'s, and write its
    manifest last: a crash in between leaves a directory without a manifest, never a wrong one."""
    staging = core.make_staging(dest)
    try:
        with contextlib.suppress(FileNotFoundError):
            os.remove(os.path.join(dest, MANIFEST))
        for rel in manifest.files:
            target = os.path.join(staging, *rel.split("/"))
            os.makedirs(os.path.dirname(target), exist_ok=True)
            shutil.copyfile(os.path.join(root, *rel.split("/")), target)
        for rel in set(held.files if held else ()) - set(manifest.files):
            with contextlib.suppress(OSError):
                os.remove(os.path.join(dest, *rel.split("/")))
        core.merge_into(staging, dest)
        manifest.write(os.path.join(dest, MANIFEST))
    except OSError as e:
        raise StorageError(f"cannot write to destination {dest}: {os_reason(e)}") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _clear(dest: str, held: Manifest | None) -> None:
    """Remove the model files a corrupt DEST holds (its manifest first)."""
    with contextlib.suppress(FileNotFoundError):
        os.remove(os.path.join(dest, MANIFEST))
    for rel in held.files if held else ():
        with contextlib.suppress(OSError):
            os.remove(os.path.join(dest, *rel.split("/")))
