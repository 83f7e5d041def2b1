"""What a download has received so far, so that the next attempt resumes instead of starting over.

A fetcher writes its files under `Partial.files` and records, per file, what the source said about it
(ETag, Last-Modified, full size) before the first byte is written. A later attempt, in the same run
(a retry) or the next one (the init container restarted), asks `resume_from()` how many bytes it may
keep: the file's length on disk when the source still names the same object, else 0. HTTP sends a
Range request with If-Range, S3 a ranged GET with IfMatch, so an object that changed in between is
fetched whole. The caller verifies the complete file (length, sha256 where given) at the end.

With a model cache the directory lives in the cache (`<cache>/partial/<key>`) and survives the
process; without one it is a fresh directory in the staging area and only helps retries. Standard
library only.
"""

from __future__ import annotations

import json
import os
import shutil
from typing import Any

STATE = "state.json"


class Partial:
    """Files in `<root>/files`, with what the source said about each in `<root>/state.json`."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.files = os.path.join(root, "files")
        os.makedirs(self.files, exist_ok=True)
        try:
            with open(os.path.join(root, STATE), encoding="utf-8") as f:
                self._state: dict[str, dict[str, Any]] = json.load(f)
        except (OSError, ValueError):
            self._state = {}

    def path(self, rel: str) -> str:
        return os.path.join(self.files, *rel.split("/"))

    def get(self, rel: str) -> dict[str, Any]:
        """What was recorded for `rel` (empty when nothing was)."""
        return dict(self._state.get(rel, {}))

    def begin(self, rel: str, **info: Any) -> None:
        """Record what the source says about `rel` before its first byte is written."""
        self._state[rel] = info
        self._save()

    def have(self, rel: str) -> int:
        """Bytes of `rel` on disk."""
        path = self.path(rel)
        return os.path.getsize(path) if rel and os.path.isfile(path) else 0

    def resume_from(self, rel: str, **same: Any) -> int:
        """Bytes of `rel` already on disk that may be kept: its length when every `same` value matches
        what was recorded (an ETag, a size), else 0 (and the stale file is discarded)."""
        recorded = self._state.get(rel)
        if recorded and all(v is not None and v != "" and recorded.get(k) == v for k, v in same.items()):
            return self.have(rel)
        self.discard(rel)
        return 0

    def discard(self, rel: str) -> None:
        """Forget `rel` and remove what was written of it."""
        path = self.path(rel)
        if os.path.lexists(path):
            os.remove(path)
        if self._state.pop(rel, None) is not None:
            self._save()

    def clear(self) -> None:
        """Everything gone: the download completed (its files were moved away) or is abandoned."""
        shutil.rmtree(self.root, ignore_errors=True)

    def _save(self) -> None:
        tmp = os.path.join(self.root, STATE + ".tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(self._state, f)
        os.replace(tmp, os.path.join(self.root, STATE))
