"""Unpacking a fetched .zip, .tar, .tar.gz or .tgz, entry by entry, inside limits and inside dest.

Entries are written one at a time as they are read (never a list of every member: a 7.5 MB .tgz can
hold a million of them), each checked before it is written:
- its path stays inside the root and goes through no symbolic link (links are looked up on disk, so
  an entry cannot reuse a link written earlier);
- a symbolic link's target is relative, climbs ('..') only at its start and no higher than the root,
  and never after a name: with that rule the lexical and the real target agree whatever the names turn
  out to be (a simplification of "never climb out of another link", which needs every member up front);
- a hard link points to a regular file written earlier; devices and fifos are refused;
- no entry replaces an earlier one (a directory may be repeated);
- entries, declared sizes and the bytes actually written stay within max_files and max_unpacked.
Where Python has PEP 706's tarfile.data_filter (3.11.4+; Debian bookworm's 3.11.2 lacks it), it checks
each tar member as well, as a second line of defence.

Standard library only.
"""

from __future__ import annotations

import functools
import os
import tarfile
import zipfile
import zlib
from collections.abc import Callable
from typing import IO

from .common import CHUNK, Limits, StorageError, human, prefixes, safe_relpath


def archive_kind(path: str) -> str | None:
    """'zip' or 'tar' for the names that are unpacked, None for anything else."""
    name = os.path.basename(path).lower()
    if name.endswith(".zip"):
        return "zip"
    if name.endswith((".tar", ".tar.gz", ".tgz")):
        return "tar"
    return None


def unpack(archive: str, out: str, limits: Limits) -> None:
    """Unpack `archive` into the empty directory `out`; StorageError if it is corrupt, hostile or too big."""
    writer = _Writer(out, f"archive {os.path.basename(archive)}", limits)
    try:
        if archive_kind(archive) == "zip":
            _unpack_zip(archive, writer)
        else:
            _unpack_tar(archive, writer)
    except (tarfile.TarError, zipfile.BadZipFile, zlib.error, EOFError) as e:
        if isinstance(e, getattr(tarfile, "FilterError", ())):
            raise writer.refused(str(e)) from None
        raise StorageError(f"cannot unpack {writer.label}: {e or type(e).__name__}") from None


class _Writer:
    """Creates the entries of one archive under `root`, counting entries and bytes against the limits."""

    def __init__(self, root: str, label: str, limits: Limits) -> None:
        self.root, self.label, self.limits = root, label, limits
        self.entries = 0
        self.nbytes = 0
        # Run just before an entry is created, after our own checks (so their messages come first).
        self.second_line: Callable[[], object] = lambda: None

    def refused(self, reason: str) -> StorageError:
        return StorageError(f"refused {self.label}: {reason}")

    def path(self, rel: str, name: str) -> str:
        """The on-disk path of `rel`, refused if any directory on the way is a symbolic link; counted."""
        self.entries += 1
        if self.entries > self.limits.max_files:
            raise self.limits.breach("max_files", f"{self.label} holds more than {self.limits.max_files} entries")
        for p in prefixes(rel):
            if os.path.islink(os.path.join(self.root, p)):
                raise self.refused(f"entry '{name}' is written through the link '{p}'")
        return os.path.join(self.root, *rel.split("/"))

    def new(self, rel: str, name: str) -> str:
        """path() for an entry that is not a directory: it must not exist yet; its parents are made."""
        path = self.path(rel, name)
        if not rel:
            raise self.refused(f"entry '{name}' is not a file name")
        if os.path.lexists(path):
            raise self.refused(f"entry '{name}' appears twice")
        self.second_line()
        os.makedirs(os.path.dirname(path), exist_ok=True)
        return path

    def directory(self, rel: str, name: str) -> None:
        path = self.path(rel, name)
        if os.path.islink(path):
            raise self.refused(f"entry '{name}' is written through the link '{rel}'")
        if os.path.lexists(path) and not os.path.isdir(path):
            raise self.refused(f"entry '{name}' appears twice")
        self.second_line()
        os.makedirs(path, exist_ok=True)

    def file(self, rel: str, name: str, src: IO[bytes], declared: int) -> str:
        """Copy `src` to a new file; the declared size is checked first, the bytes written as they come."""
        if self.nbytes + declared > self.limits.max_unpacked:
            raise self._too_big(f"entry '{name}' declares {human(declared)}")
        path = self.new(rel, name)
        with open(path, "xb") as f:
            for chunk in iter(lambda: src.read(CHUNK), b""):
                self.nbytes += len(chunk)
                if self.nbytes > self.limits.max_unpacked:
                    raise self._too_big(f"entry '{name}' holds more than it declares")
                f.write(chunk)
        return path

    def _too_big(self, detail: str) -> StorageError:
        return self.limits.breach(
            "max_unpacked", f"{self.label} unpacks to more than {human(self.limits.max_unpacked)} ({detail})"
        )

    def symlink(self, rel: str, name: str, target: str) -> None:
        t = target.replace("\\", "/")
        if t.startswith("/") or (len(t) > 1 and t[1] == ":"):
            raise self.refused(f"symlink '{name}' points to the absolute path '{target}'")
        depth = rel.count("/")  # directories between the root and the link
        named = ""
        for part in t.split("/"):
            if part in ("", "."):
                continue
            if part != "..":
                named = named or part
            elif named:
                kind = "the link " if os.path.islink(os.path.join(os.path.dirname(self.path_of(rel)), named)) else ""
                raise self.refused(
                    f"symlink '{name}' climbs out of {kind}'{named}' ('{target}'): only leading '..' are allowed"
                )
            elif depth == 0:
                raise self.refused(f"symlink '{name}' points outside the destination ('{target}')")
            else:
                depth -= 1
        os.symlink(target, self.new(rel, name))

    def hardlink(self, rel: str, name: str, target: str) -> None:
        try:
            target_rel = safe_relpath(target, self.label)
        except StorageError:
            raise self.refused(f"hard link '{name}' points outside the destination ('{target}')") from None
        source = self.path_of(target_rel)
        linked = any(os.path.islink(os.path.join(self.root, p)) for p in prefixes(target_rel))
        if not target_rel or linked or os.path.islink(source):
            raise self.refused(f"hard link '{name}' points through a link ('{target}')")
        if not os.path.isfile(source):
            raise self.refused(f"hard link '{name}' points to '{target}', which is not a file written before it")
        os.link(source, self.new(rel, name))

    def path_of(self, rel: str) -> str:
        return os.path.join(self.root, *rel.split("/"))


def _unpack_zip(archive: str, writer: _Writer) -> None:
    limits = writer.limits
    with open(archive, "rb") as f:
        # The end record's entry count, read before ZipFile() loads the whole central directory into
        # memory (a ZipInfo per entry). zipfile has no public reader for it.
        end = zipfile._EndRecData(f)  # type: ignore[attr-defined]
    if end and end[zipfile._ECD_ENTRIES_TOTAL] > limits.max_files:  # type: ignore[attr-defined]
        raise limits.breach("max_files", f"{writer.label} holds {end[zipfile._ECD_ENTRIES_TOTAL]} entries")  # type: ignore[attr-defined]
    with zipfile.ZipFile(archive) as zf:
        infos = zf.infolist()
        declared = sum(i.file_size for i in infos)
        if declared > limits.max_unpacked:
            raise limits.breach("max_unpacked", f"{writer.label} declares {human(declared)} unpacked")
        for info in infos:
            rel = safe_relpath(info.filename, writer.label)
            if info.is_dir():
                writer.directory(rel, info.filename)
            else:
                # zipfile never creates links (a stored symlink is unpacked as a small text file).
                with zf.open(info) as src:
                    writer.file(rel, info.filename, src, info.file_size)


def _unpack_tar(archive: str, writer: _Writer) -> None:
    # Stream mode ("r|*"): forward reads only, and nothing read twice.
    with tarfile.open(archive, "r|*") as tf:
        while (m := tf.next()) is not None:
            # TarFile appends every member it reads to this (undocumented, but there since Python 2) list:
            # about 500 bytes each, so 1M members made 466 MiB. Nothing here needs earlier members.
            tf.members.clear()  # type: ignore[attr-defined]
            rel = safe_relpath(m.name, writer.label)
            if hasattr(tarfile, "data_filter"):  # raises FilterError, turned into "refused" by unpack()
                writer.second_line = functools.partial(tarfile.data_filter, m, writer.root)
            if m.isdir():
                writer.directory(rel, m.name)
            elif m.isfile():
                src = tf.extractfile(m)
                assert src is not None  # a regular file always has a reader
                path = writer.file(rel, m.name, src, m.size)
                os.chmod(path, (m.mode & 0o755) | 0o600)  # no setuid/setgid, no group/other write
            elif m.issym():
                writer.symlink(rel, m.name, m.linkname)
            elif m.islnk():
                writer.hardlink(rel, m.name, m.linkname)
            else:
                raise writer.refused(f"entry '{m.name}' is a device or fifo")
