"""The command line: the storage-initializer image's ENTRYPOINT (`python -m edgeservers.storage`).

Exit 0 with one line on stdout; 1 with one line on stderr (the error); 2 for bad arguments; retries are
noted on stdout. SIGTERM unwinds like an error, so the staging directory is removed.

`--cache-dir DIR` (or STORAGE_CACHE_DIR) goes through the model cache (cache.py). `--prepare-cache
UID:GID` with `--cache-dir` only creates the cache directory and gives it to UID:GID: the pod's one
step as root (with the CHOWN capability alone), so that the initializer itself runs as that user.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from typing import Any

from .cache import provide
from .common import KNOBS, Limits, StorageError, os_reason, redact, scrub
from .core import fetch

PROG = "storage-initializer"
_USAGE = (
    "python -m edgeservers.storage <model_uri> <dest_dir> [--sha256 HEX] [--cache-dir DIR] [--max-download SIZE] ..."
)


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]  # one line, not argparse's usage block
        raise _UsageError(message)


def _on_sigterm(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)  # unwinds through the finally that removes the staging directory


def _parser() -> _Parser:
    parser = _Parser(
        prog="python -m edgeservers.storage",
        description="Fetch a model (s3://, https://, http://, file:// or a local path) into a directory.",
        epilog="Credentials and endpoints come from the environment; see storage-initializer/README.md.",
    )
    parser.add_argument("model_uri", nargs="?", help="where the model is; a single .zip/.tar/.tar.gz/.tgz is unpacked")
    parser.add_argument("dest_dir", nargs="?", help="directory to fill (created if missing), e.g. /mnt/models")
    parser.add_argument("--sha256", metavar="HEX", help="expected SHA-256 of a single-file download")
    parser.add_argument(
        "--cache-dir",
        metavar="DIR",
        default=os.environ.get("STORAGE_CACHE_DIR", "").strip() or None,
        help="node-local model cache: check the source cheaply, use the cached copy when it is unchanged or "
        "unreachable, resume interrupted downloads (env STORAGE_CACHE_DIR; default: no cache)",
    )
    parser.add_argument(
        "--prepare-cache",
        metavar="UID:GID",
        help="only create --cache-dir and give it (and what it holds) to UID:GID, then exit (run as root)",
    )
    for name, knob in KNOBS.items():
        # Kept as text and parsed by Limits.resolve(), like the environment variable, so the messages agree.
        parser.add_argument(
            knob.flag,
            dest=name,
            metavar=knob.parse.__name__.upper(),
            help=f"{knob.help} (env {knob.env}, default {knob.default})",
        )
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        args = _parser().parse_args(argv)
        if args.prepare_cache is not None:
            return _prepare_cache(args)
        missing = [name for name in ("model_uri", "dest_dir") if getattr(args, name) is None]
        if missing:
            raise _UsageError(f"the following arguments are required: {', '.join(missing)}")
        limits = Limits.resolve({name: getattr(args, name) for name in KNOBS})
    except _UsageError as e:
        print(f"{PROG}: error: {e} (usage: {_USAGE})", file=sys.stderr)
        return 2
    except StorageError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2

    log = logging.getLogger("edgeservers.storage")
    handler = logging.StreamHandler(sys.stdout)  # retry notes; stderr keeps only the one error line
    handler.setFormatter(logging.Formatter(f"{PROG}: %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    if hasattr(signal, "SIGTERM"):
        signal.signal(signal.SIGTERM, _on_sigterm)

    try:
        if args.cache_dir:
            line = provide(args.model_uri, args.dest_dir, args.cache_dir, args.sha256, limits).line()
        else:
            dest, files, nbytes = fetch(args.model_uri, args.dest_dir, args.sha256, limits)
            line = f"wrote {files} file{'s' if files != 1 else ''} ({nbytes} bytes) from {redact(args.model_uri.strip())} to {dest}"
    except StorageError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: error: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # a bug: still one line (STORAGE_DEBUG=1 re-raises for the traceback)
        if os.environ.get("STORAGE_DEBUG"):
            raise
        print(f"{PROG}: error: unexpected {type(e).__name__}: {scrub(str(e))}", file=sys.stderr)
        return 1
    finally:
        log.removeHandler(handler)
    print(f"{PROG}: {line}")
    return 0


def _raise(error: OSError) -> None:
    raise error


def _prepare_cache(args: argparse.Namespace) -> int:
    """mkdir -p the cache directory and chown it, and everything in it that another user owns, to UID:GID."""
    if not args.cache_dir or args.model_uri is not None:
        raise _UsageError("--prepare-cache UID:GID takes --cache-dir DIR and no model_uri or dest_dir")
    try:
        uid, gid = (int(part) for part in args.prepare_cache.split(":"))
    except ValueError:
        raise _UsageError(f"--prepare-cache: expected UID:GID (numbers), got {args.prepare_cache!r}") from None
    root = os.path.abspath(args.cache_dir)
    changed = 0
    try:
        os.makedirs(root, exist_ok=True)
        for dirpath, dirs, names in os.walk(root, onerror=_raise):
            for path in [dirpath, *(os.path.join(dirpath, n) for n in names)]:
                st = os.lstat(path)
                if (st.st_uid, st.st_gid) != (uid, gid):
                    os.lchown(path, uid, gid)
                    changed += 1
            dirs.sort()
    except OSError as e:
        print(
            f"{PROG}: error: cannot give the model cache {root} to {uid}:{gid}: {os_reason(e)} "
            "(this step runs as root with the CHOWN capability; or prepare the directory on the node)",
            file=sys.stderr,
        )
        return 1
    print(f"{PROG}: model cache {root} belongs to {uid}:{gid} ({changed} path{'s' if changed != 1 else ''} changed)")
    return 0
