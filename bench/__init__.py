"""Benchmarks (issue 5): the servers against the runtime's own speed and a naive server. Run `make bench`.

Servers start through the tests' harness
(tests/harness.py), imported as `harness`: tests/ goes on sys.path here, as pytest's pythonpath
(pyproject.toml) puts it there for the tests."""

import sys
from pathlib import Path

_TESTS = str(Path(__file__).resolve().parent.parent / "tests")
if _TESTS not in sys.path:
    sys.path.append(_TESTS)
