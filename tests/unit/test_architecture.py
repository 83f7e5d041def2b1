"""The package's shape, checked: every module imports alone, no import cycle, no module reads another's private
names, and the wrapper is changed only through the patch registry (edgeservers/seldon/patches.py)."""

from __future__ import annotations

import ast
import importlib
import inspect
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.paths import ROOT

PACKAGE = ROOT / "edgeservers"
# Third-party packages whose attributes only edgeservers/seldon/patches.py may replace.
PATCHED_PACKAGES = ("seldon_core", "flask", "werkzeug", "gunicorn", "tornado", "grpc")


def modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


MODULES = modules()


def resolve(module: str, level: int, name: str | None, is_package: bool) -> str:
    """The absolute name of `from <level dots><name> import ...` written in `module`."""
    if level == 0:
        return name or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join([*base, *([name] if name else [])])


def imports(module: str) -> list[tuple[str, str | None]]:
    """(imported module, imported name or None) of every import in `module`, wherever it is written."""
    path = MODULES[module]
    tree = ast.parse(path.read_text())
    found: list[tuple[str, str | None]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, None) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            source = resolve(module, node.level, node.module, path.name == "__init__.py")
            for alias in node.names:
                sub = f"{source}.{alias.name}"
                found.append((sub, None) if sub in MODULES else (source, alias.name))
    return found


# Imported once by the parent of the children below: the heavy third-party packages (a fresh interpreter each
# would cost a second per module), never a module of ours.
_ALONE = """
import importlib, json, os, sys, traceback
for dependency in sys.argv[1].split(","):
    try:
        importlib.import_module(dependency)
    except ImportError:
        pass
failures = {}
for name in sys.argv[2:]:
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        try:
            importlib.import_module(name)
            message = b""
        except BaseException:
            message = traceback.format_exc().encode()[-3000:]
        os.write(write, message)
        os._exit(0)
    os.close(write)
    out = b""
    while chunk := os.read(read, 65536):
        out += chunk
    os.close(read)
    os.waitpid(pid, 0)
    if out:
        failures[name] = out.decode()
print(json.dumps(failures))
"""
_HEAVY = "numpy,cv2,grpc,flask,orjson,boto3,seldon_core.microservice,seldon_core.wrapper,tornado.httpserver,openvino"


def test_every_module_imports_alone():
    """Each module imported first, in a process where no other module of ours was: none depends on another
    having been imported before it."""
    names = [name for name in MODULES if not name.endswith("__main__")]  # a __main__ is a script: it runs
    result = subprocess.run(
        [sys.executable, "-c", _ALONE, _HEAVY, *names], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout.splitlines()[-1]) == {}


def test_no_import_cycle() -> None:
    graph = {m: {dep for dep, _ in imports(m) if dep in MODULES and dep != m} for m in MODULES}
    # a package's __init__ importing its own submodules is the package itself, not a cycle through it
    for m in MODULES:
        graph[m] = {d for d in graph[m] if not (d.startswith(m + ".") or m.startswith(d + "."))}
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                pytest.fail("import cycle: " + " -> ".join([*path[path.index(dep) :], dep]))
            if dep not in state:
                visit(dep, [*path, dep])
        state[node] = 2

    for m in MODULES:
        if m not in state:
            visit(m, [m])


def test_no_module_reads_another_modules_private_names():
    for module in MODULES:
        tree = ast.parse(MODULES[module].read_text())
        aliases = {}  # local name -> one of our modules
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                source = resolve(module, node.level, node.module, MODULES[module].name == "__init__.py")
                for alias in node.names:
                    if f"{source}.{alias.name}" in MODULES:
                        aliases[alias.asname or alias.name] = f"{source}.{alias.name}"
                    elif source in MODULES and source != module:
                        assert not _private(alias.name), f"{module} imports {alias.name} from {source}"
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name in MODULES:
                        aliases[alias.asname or alias.name] = alias.name
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases:
                assert not _private(node.attr), f"{module} reads {aliases[node.value.id]}.{node.attr}"


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def test_other_packages_are_changed_only_through_the_patch_registry():
    """No module but patches.py assigns to an attribute of a module or class from the wrapper and the libraries
    under it, or calls setattr: a patch outside the registry would escape the source-hash check."""
    for module, path in MODULES.items():
        if module == "edgeservers.seldon.patches":
            continue
        tree = ast.parse(path.read_text())
        foreign = set()  # local names of modules and classes of the patched packages
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.ImportFrom)
                and node.level == 0
                and (node.module or "").startswith(PATCHED_PACKAGES)
            ):
                source = importlib.import_module(node.module or "")
                for alias in node.names:
                    value = getattr(source, alias.name, None)
                    if value is None or inspect.ismodule(value) or inspect.isclass(value):
                        foreign.add(alias.asname or alias.name)  # None: a submodule not imported yet
            elif isinstance(node, ast.Import):
                foreign |= {
                    alias.asname or alias.name for alias in node.names if alias.name.startswith(PATCHED_PACKAGES)
                }
        for node in ast.walk(tree):
            targets = (
                node.targets
                if isinstance(node, ast.Assign)
                else [node.target]
                if isinstance(node, ast.AugAssign)
                else []
            )
            for target in targets:
                if (
                    isinstance(target, ast.Attribute)
                    and isinstance(target.value, ast.Name)
                    and target.value.id in foreign
                ):
                    pytest.fail(f"{module} assigns {target.value.id}.{target.attr} outside the patch registry")
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "setattr":
                pytest.fail(f"{module} calls setattr outside the patch registry (line {node.lineno})")
