"""What every part of edgeservers.storage shares: the one error type, the limits, message hygiene
(no credentials in any message) and path rules. Standard library only."""

from __future__ import annotations

import os
import posixpath
import re
import urllib.parse
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

CHUNK = 1 << 20
USER_AGENT = "edgeservers-storage/1"
_SECRET_ENV = ("AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID", "AWS_SESSION_TOKEN")
_FALSE = ("0", "false", "no", "off")
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


class StorageError(Exception):
    """A download failed. The message is one line, meant for humans, and never holds credentials."""

    def __init__(self, message: str) -> None:
        super().__init__(scrub(message))


# ---------------------------------------------------------------------------------------------
# Limits: what one download may cost an edge node (1 GB of RAM, an SD card, a 256Mi init container)


def size(text: str) -> int:
    """A byte count such as 512M, 1G, 1Gi, 300MiB or 1048576 (K/M/G/T are powers of 1024)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:ib?|b)?\s*", text, flags=re.I)
    if not m or float(m.group(1)) <= 0:
        raise ValueError(f"{text!r} is not a positive size (bytes, or with K/M/G/T)")
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


def count(text: str) -> int:
    """A positive whole number."""
    if not text.strip().isdigit() or int(text) <= 0:
        raise ValueError(f"{text!r} is not a positive whole number")
    return int(text)


def seconds(text: str) -> float:
    """A positive number of seconds."""
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise ValueError(f"{text!r} is not a positive number of seconds")
    return value


def human(n: float) -> str:
    """1073741824 -> '1 GiB', for limit messages."""
    for unit, factor in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= factor:
            return f"{n / factor:.4g} {unit}"
    return f"{int(n)} bytes"


@dataclass(frozen=True)
class Knob:
    """One limit: its command-line flag, its environment variable, its default and its parser."""

    flag: str
    env: str
    default: str
    parse: Callable[[str], float]
    show: Callable[[float], str]
    help: str
    old_env: str = ""  # a name it had before, still read


# Defaults for edge models (justified in storage-initializer/README.md): a served model has to fit in
# RAM next to the runtime on a 1 GB node, so nothing near these is a real model.
KNOBS: dict[str, Knob] = {
    "max_download": Knob("--max-download", "STORAGE_MAX_DOWNLOAD", "512M", size, human, "most bytes fetched in all"),
    "max_unpacked": Knob(
        "--max-unpacked", "STORAGE_MAX_UNPACKED", "1G", size, human, "most bytes an archive may unpack to"
    ),
    "max_files": Knob(
        "--max-files",
        "STORAGE_MAX_FILES",
        "10000",
        count,
        lambda n: f"{int(n)} files",
        "most files fetched or archive entries unpacked",
    ),
    "stall_timeout": Knob(
        "--stall-timeout",
        "STORAGE_STALL_TIMEOUT",
        "60",
        seconds,
        lambda s: f"{s:g} s",
        "fail when 64 KiB take longer than this (HTTP) or no byte comes (S3)",
        "STORAGE_TIMEOUT",
    ),
    "connect_timeout": Knob(
        "--connect-timeout",
        "STORAGE_CONNECT_TIMEOUT",
        "5",
        seconds,
        lambda s: f"{s:g} s",
        "seconds to wait for a connection, and for the source's answer when a cached copy could be used instead",
    ),
    "cache_max": Knob(
        "--cache-max", "STORAGE_CACHE_MAX", "1G", size, human, "most bytes the model cache keeps (with --cache-dir)"
    ),
}


@dataclass(frozen=True)
class Limits:
    """Bytes fetched, bytes unpacked, files (or archive entries) written, seconds without a byte, seconds
    to connect, and bytes the model cache may keep."""

    max_download: int
    max_unpacked: int
    max_files: int
    stall_timeout: float
    connect_timeout: float
    cache_max: int

    @classmethod
    def resolve(cls, given: dict[str, str | None] | None = None) -> Limits:
        """Each limit from `given` (the CLI's flags), else its environment variable, else its default."""
        values: dict[str, Any] = {}
        for name, knob in KNOBS.items():
            raw, source = (given or {}).get(name), knob.flag
            if raw is None:
                set_env = [e for e in (knob.env, knob.old_env) if e and os.environ.get(e, "").strip()]
                raw, source = (os.environ[set_env[0]], set_env[0]) if set_env else (knob.default, "default")
            try:
                values[name] = knob.parse(raw)
            except ValueError as e:
                raise StorageError(f"{source}: {e}") from None
        return cls(**values)

    def describe(self, name: str, what: str) -> str:
        """What happened, the limit, and how to change it."""
        knob = KNOBS[name]
        return f"{what}: limit {knob.show(getattr(self, name))} (set with {knob.flag} or {knob.env})"

    def breach(self, name: str, what: str) -> StorageError:
        """The one-line error for a breached limit."""
        return StorageError(self.describe(name, what))


@dataclass(frozen=True)
class Source:
    """What the source said about the model when it was fetched: what the next check sends back to it
    (ETag for If-None-Match / the S3 listing, Last-Modified for If-Modified-Since)."""

    etag: str = ""
    last_modified: str = ""
    size: int | None = None


UNCHANGED, CHANGED, UNREACHABLE = "unchanged", "changed", "unreachable"


@dataclass(frozen=True)
class Check:
    """The answer of a cheap look at the source: UNCHANGED, CHANGED (with what it says now) or UNREACHABLE
    (connection refused or timed out, HTTP 5xx), with the reason in words."""

    state: str
    detail: str
    source: Source | None = None


class Budget:
    """The bytes one download() has fetched so far, against max_download: a fetcher calls check()
    as bytes arrive for the current file and commit() once the file is complete."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.done = 0

    def check(self, current: int, what: str) -> None:
        if self.done + current > self.limits.max_download:
            raise self.limits.breach("max_download", f"{what} is more than {human(self.limits.max_download)} in all")

    def commit(self, nbytes: int) -> None:
        self.done += nbytes


# ---------------------------------------------------------------------------------------------
# Messages


def gave_up(attempts: int) -> str:
    """How a failure that was retried ends its line."""
    return f"gave up after {attempts} attempt{'s' if attempts != 1 else ''}"


def scheme(uri: str) -> str:
    m = re.match(r"\s*([A-Za-z][A-Za-z0-9+.-]*)://", uri or "")
    return m.group(1).lower() if m else ""


def redact(uri: str) -> str:
    """The URI without user-info, query string or fragment (presigned URLs carry signatures there)."""
    if not scheme(uri):
        return uri
    parts = urllib.parse.urlsplit(uri)
    netloc = parts.netloc.rsplit("@", 1)[-1]
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "…" if parts.query else "", ""))


def scrub(message: str) -> str:
    """One line, without URL user-info or the values of credential variables."""
    text = " ".join(str(message).split())
    text = re.sub(r"(\b[a-zA-Z][a-zA-Z0-9+.-]*://)[^/\s@]+@", r"\1***@", text)
    for name in _SECRET_ENV:
        value = os.environ.get(name, "")
        if len(value) >= 4:
            text = text.replace(value, "***")
    return text


def causes(e: BaseException | None) -> list[BaseException]:
    """`e` and the exceptions that led to it (urllib3 and botocore wrap socket and TLS errors)."""
    chain: list[BaseException] = []
    while e is not None and e not in chain:
        chain.append(e)
        e = e.__cause__ or e.__context__
    return chain


def os_reason(e: BaseException) -> str:
    """The errno text of `e` or of the OSError that caused it, else `e` itself."""
    for cause in causes(e):
        if isinstance(cause, OSError) and cause.strerror:
            return cause.strerror
    return str(e) or type(e).__name__


def env_flag(name: str, default: bool) -> bool:
    raw = os.environ.get(name, "").strip().lower()
    return default if not raw else raw not in _FALSE


def env_number(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise StorageError(f"{name}={raw!r} is not a number") from None
    if value < 0:
        raise StorageError(f"{name} must not be negative")
    return value


# ---------------------------------------------------------------------------------------------
# Paths


def safe_name(name: str | None) -> str:
    """A bare file name from a URL path or Content-Disposition, or "" when there is none."""
    if not name:
        return ""
    name = name.replace("\\", "/").rsplit("/", 1)[-1].strip()
    if name in ("", ".", "..") or "\x00" in name:
        return ""
    return name


def safe_relpath(name: str, what: str) -> str:
    """`name` (an archive entry or object key) as a normalised relative path that stays inside dest."""
    n = name.replace("\\", "/")
    if n.startswith("/") or re.match(r"[A-Za-z]:", n):
        raise StorageError(f"refused {what}: entry '{name}' has an absolute path")
    parts = [p for p in n.split("/") if p not in ("", ".")]
    if ".." in parts:
        rel = posixpath.normpath("/".join(parts))
        where = "would land outside the destination" if rel == ".." or rel.startswith("../") else "has a '..' component"
        raise StorageError(f"refused {what}: entry '{name}' {where}")
    return "/".join(parts)


def prefixes(rel: str) -> Iterable[str]:
    """'a/b/c' -> 'a', 'a/b': the directories a relative path goes through."""
    parts = rel.split("/")
    for i in range(1, len(parts)):
        yield "/".join(parts[:i])
