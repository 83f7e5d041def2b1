"""The test suite; tests/README.md describes its tiers and tests/support/ its shared helpers.

A regular package, imported from the repository root (`from tests.support import harness`): seldon-core
installs a package named `tests` into site-packages, and the root, which pytest and `python -m` put first
on sys.path, must be where `tests` is found.
"""
