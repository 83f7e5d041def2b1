"""Every change made inside seldon-core 1.17.1's wrapper, and every reliance on the internals of it and of the
libraries under it, declared once, beside the code that needs it, in one registry.

`patch` puts a replacement in the wrapper's place of a name and keeps the original reachable (as the
replacement's `__wrapped__`); `relies_on` records code that is called or counted on unchanged. Each entry
names the code it depends on, what it relies on there, and the sha256 (first 16 hex digits) of that code's
source when the reliance was written: tests/unit/test_seldon_adapter.py checks every entry against the installed
packages, so that an upgrade is a deliberate change, not a surprise.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import inspect
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Reliance:
    target: str  # "module:qualname" of the code relied on
    source_sha: str  # sha256 of its source when the reliance was written, first 16 hex digits
    why: str  # what is relied on there
    patched: bool  # whether the target is replaced (its original kept as __wrapped__)


REGISTRY: dict[str, Reliance] = {}
PATCHED: list[str] = []  # "module:qualname" of every name replaced, in the order the patches were applied


def relies_on(target: str, source_sha: str, why: str) -> None:
    """Record code edgeservers calls or counts on without replacing it."""
    _record(Reliance(target, source_sha, why, patched=False))


def patch(owner: Any, name: str, replacement: Any, *, source_sha: str, why: str, target: str | None = None) -> Any:
    """Put `replacement` in `owner`'s place of `name` and return the original, which stays reachable as the
    replacement's `__wrapped__` (a staticmethod's function for class attributes). `target` is the code the
    patch relies on, by default the replaced function itself (another, when a module global is replaced:
    the function that reads it)."""
    original = getattr(owner, name)
    function = getattr(replacement, "__func__", replacement)
    if callable(function) and not isinstance(function, type) and target is None:
        function.__wrapped__ = original
    setattr(owner, name, replacement)
    PATCHED.append(_qualified(owner, name))
    _record(Reliance(target or _qualified(owner, name), source_sha, why, patched=target is None))
    return original


@contextlib.contextmanager
def swapped(owner: Any, name: str, value: Any, *, target: str, source_sha: str, why: str) -> Iterator[None]:
    """`owner.name` is `value` for the `with` block only (e.g. a module global the wrapper reads while it builds
    something), then what it was."""
    _record(Reliance(target, source_sha, why, patched=False))
    original = getattr(owner, name)
    setattr(owner, name, value)
    try:
        yield
    finally:
        setattr(owner, name, original)


def _qualified(owner: Any, name: str) -> str:
    if inspect.ismodule(owner):
        return f"{owner.__name__}:{name}"
    return f"{owner.__module__}:{owner.__qualname__}.{name}"


def _record(reliance: Reliance) -> None:
    """Add a reliance; a second one on the same code adds what it relies on there."""
    known = REGISTRY.get(reliance.target)
    if known is None:
        REGISTRY[reliance.target] = reliance
        return
    if known.source_sha != reliance.source_sha:
        raise ValueError(f"{reliance.target} is recorded twice with different source hashes")
    why = known.why if reliance.why in known.why else f"{known.why}; {reliance.why}"
    REGISTRY[reliance.target] = Reliance(known.target, known.source_sha, why, known.patched or reliance.patched)


def resolve(target: str) -> Any:
    """The code `target` names, as the installed package wrote it (the original of a patched function)."""
    module, qualname = target.split(":")
    found: Any = importlib.import_module(module)
    for part in qualname.split("."):
        found = getattr(found, part)
    return getattr(found, "__wrapped__", found)


def source_sha(target: str) -> str:
    """The sha256 (first 16 hex digits) of the installed source of `target`."""
    return hashlib.sha256(inspect.getsource(resolve(target)).encode()).hexdigest()[:16]
