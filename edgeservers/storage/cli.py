"""The command line: the storage-initializer image's ENTRYPOINT (`python -m edgeservers.storage`).

Exit 0 with one line on stdout; 1 with one line on stderr (the error); 2 for bad arguments; retries are
noted on stdout. SIGTERM unwinds like an error, so the staging directory is removed.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from typing import Any

from .common import KNOBS, Limits, StorageError, redact, scrub
from .core import fetch

PROG = "storage-initializer"
_USAGE = "python -m edgeservers.storage <model_uri> <dest_dir> [--sha256 HEX] [--max-download SIZE] ..."


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
    parser.add_argument("model_uri", help="where the model is; a single .zip/.tar/.tar.gz/.tgz is unpacked")
    parser.add_argument("dest_dir", help="directory to fill (created if missing), e.g. /mnt/models")
    parser.add_argument("--sha256", metavar="HEX", help="expected SHA-256 of a single-file download")
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
        dest, files, nbytes = fetch(args.model_uri, args.dest_dir, args.sha256, limits)
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
    print(
        f"{PROG}: wrote {files} file{'s' if files != 1 else ''} ({nbytes} bytes) from {redact(args.model_uri.strip())} to {dest}"
    )
    return 0
