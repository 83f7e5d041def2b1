"""Local paths and file:// URIs: a file or a directory, copied (the same limits as a download)."""

from __future__ import annotations

import os
import shutil
import urllib.parse

from .common import Budget, Source, StorageError, os_reason, scheme
from .partial import Partial


def local_path(uri: str) -> str:
    """The absolute path a local path or file:// URI names."""
    if scheme(uri) == "file":
        parts = urllib.parse.urlsplit(uri)
        path = parts.path if parts.netloc in ("", "localhost") else parts.netloc + parts.path
        path = urllib.parse.unquote(path)
    else:
        path = os.path.expanduser(uri)
    return os.path.abspath(path)


def fetch(uri: str, partial: Partial, need_single: bool, budget: Budget) -> tuple[str | None, Source]:
    """Copy into `partial.files`; return (the copied file, or None for a directory; the source's size)."""
    out = partial.files
    path = local_path(uri)
    if not os.path.exists(path):
        raise StorageError(f"no such file or directory: {path}")
    try:
        if os.path.isdir(path):
            if need_single:
                raise StorageError(f"a sha256 check needs a single file, but {path} is a directory")
            real_src, real_out = os.path.realpath(path), os.path.realpath(out)
            if os.path.commonpath([real_src, real_out]) == real_src:
                raise StorageError(f"the destination is inside the source directory {path}")
            _check_tree(path, budget)
            shutil.copytree(path, out, dirs_exist_ok=True, copy_function=shutil.copyfile)
            return None, Source()
        budget.check(os.path.getsize(path), path)
        target = os.path.join(out, os.path.basename(path))
        shutil.copyfile(path, target)
        return target, Source(size=os.path.getsize(target))
    except shutil.Error as e:
        raise StorageError(f"cannot copy {path}: {e.args[0][0][2] if e.args and e.args[0] else e}") from None
    except OSError as e:
        raise StorageError(f"cannot copy {path}: {os_reason(e)}") from None


def _check_tree(path: str, budget: Budget) -> None:
    """The directory's files and bytes against the limits, before anything is copied."""
    files = nbytes = 0
    for dirpath, _dirs, names in os.walk(path):
        for name in names:
            files += 1
            if files > budget.limits.max_files:
                raise budget.limits.breach("max_files", f"{path} holds more than {budget.limits.max_files} files")
            nbytes += os.stat(os.path.join(dirpath, name)).st_size
            budget.check(nbytes, path)
