"""PREDICTIVE_UNIT_PARAMETERS / --parameters checked before Seldon's own parser reads them.

`seldon-core-microservice` parses the parameter list in its main() (json.loads, then int(), float() or
strtobool() per declared type) before it imports TFLiteServer or OpenVINOServer, so a value it cannot
convert ends in a traceback that names no parameter, before any code of ours has run. This module runs
first and stops the process with one line instead:

    TFLiteServer: parameter max_request_bytes: '8.388608e+06' is not an INT (write it in digits: 8388608)

How it gets to run first: edgeservers/parameter_check.pth, installed into the server's venv (the
Makefile's `install`, the image's Dockerfile). At interpreter start, in a process whose command is
`seldon-core-microservice` run from a checkout holding this file (the directory Seldon imports the
component from: the repository, the image's /opt/edgeservers), it calls `install()`, which wraps
Seldon's `parse_args` the moment `seldon_core.microservice` is imported, so the check sees exactly the
arguments and environment Seldon sees. Chosen over the alternatives because the command stays
`seldon-core-microservice`, as Seldon documents it and as the image's entrypoint, the operator, KServe,
`make serve` and the tests run it: a checker in docker/entrypoint.sh would miss `make serve` and the
tests, and a wrapper command of our own would replace the documented one. Only the standard library
here: this module is imported while the interpreter starts.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import json
import os
import sys
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any

SELDON_MAIN = "seldon_core.microservice"
PARAMETERS_ENV = "PREDICTIVE_UNIT_PARAMETERS"  # seldon_core.microservice.PARAMETERS_ENV_NAME
SELDON_TYPES = ("INT", "FLOAT", "DOUBLE", "STRING", "BOOL")  # what seldon_core.microservice.parse_parameters knows
EXPECTED = {
    "INT": "an INT",
    "FLOAT": "a FLOAT",
    "DOUBLE": "a DOUBLE",
    "BOOL": "a BOOL (true or false, yes or no, on or off, 1 or 0)",
}

ParseParameters = Callable[[list[dict[str, Any]]], dict[str, Any]]


def problem(text: str, source: str, parse: ParseParameters) -> str | None:
    """What is wrong with the parameter list `text` (from `source`) for Seldon's parser `parse`, or None."""
    try:
        entries = json.loads(text)
    except json.JSONDecodeError as e:
        return f"{source} is not valid JSON ({e}): {_clip(text)}"
    if not isinstance(entries, list) or not all(isinstance(entry, dict) for entry in entries):
        return f'{source} must be a JSON list of {{"name", "type", "value"}} objects, got {_clip(text)}'
    for number, entry in enumerate(entries, 1):
        name, kind = entry.get("name"), entry.get("type")
        if not isinstance(name, str) or not name:
            return f"{source}: entry {number} has no name: {_clip(json.dumps(entry))}"
        if kind not in SELDON_TYPES:
            return f"parameter {name}: type {kind!r} is not one of {', '.join(SELDON_TYPES)}"
        if "value" not in entry:
            return f"parameter {name}: no value"
        try:
            parse([entry])
        except Exception:  # Seldon's parser raises ValueError, TypeError or AttributeError by value
            return (
                f"parameter {name}: {entry['value']!r} is not {EXPECTED.get(kind, kind)}{_hint(kind, entry['value'])}"
            )
    return None


def _hint(kind: str, value: Any) -> str:
    """For an INT written as a float (8.388608e+06, 3.0): the same number in digits."""
    if kind != "INT":
        return ""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return " (a whole number in digits)"
    return f" (write it in digits: {int(number)})" if number.is_integer() else " (a whole number in digits)"


def _clip(text: str, size: int = 200) -> str:
    return repr(text if len(text) <= size else text[:size] + "...")


def checked(parse_args: Callable[..., Any], parse: ParseParameters) -> Callable[..., Any]:
    """Seldon's `parse_args`, followed by the check: a bad list stops the process with one line."""

    def parse_and_check(*args: Any, **kwargs: Any) -> Any:
        parsed = parse_args(*args, **kwargs)
        options = parsed[0]
        source = "--parameters" if options.parameters != os.environ.get(PARAMETERS_ENV, "[]") else PARAMETERS_ENV
        found = problem(options.parameters, source, parse)
        if found:
            raise SystemExit(f"{options.interface_name.rsplit('.', 1)[-1]}: {found}")
        return parsed

    return parse_and_check


class _GuardSeldonMain(importlib.abc.MetaPathFinder):
    """Finds seldon_core.microservice as the import system would, and wraps its parse_args once it is loaded."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != SELDON_MAIN:
            return None
        sys.meta_path.remove(self)
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None:
            return spec
        loader = spec.loader
        load = loader.exec_module

        def exec_module(module: ModuleType) -> None:
            load(module)
            module.parse_args = checked(module.parse_args, module.parse_parameters)  # type: ignore[attr-defined]

        loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec


def install() -> None:
    """Check the parameters when Seldon's main() parses its arguments (once, however often site runs this)."""
    if SELDON_MAIN not in sys.modules and not any(isinstance(f, _GuardSeldonMain) for f in sys.meta_path):
        sys.meta_path.insert(0, _GuardSeldonMain())
