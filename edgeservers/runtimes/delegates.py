"""TFLite external delegates (Coral Edge TPU, Arm NN, NXP VX, ...): the parameters, loading a library, the
trial at start, and what metadata says of it.

A delegate is a shared library exporting `tflite_plugin_create_delegate` / `tflite_plugin_destroy_delegate`;
both TFLite runtimes (LiteRT, tflite-runtime 2.14 on armv7) load one with `load_delegate(library, options)`
and hand it to an interpreter, which gives it the nodes it claims. The images carry no delegate library
(none is on PyPI or in Debian): docs/accelerators.md says how to mount or add one.
"""

from __future__ import annotations

import ctypes
import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ModelLoadError

try:  # amd64, arm64
    from ai_edge_litert.interpreter import load_delegate
except ImportError:  # armv7
    from tflite_runtime.interpreter import load_delegate

PLUGIN_SYMBOLS = ("tflite_plugin_create_delegate", "tflite_plugin_destroy_delegate")
# The one op of a model compiled by edgetpu_compiler, which only libedgetpu's delegate runs.
EDGETPU_OP = "edgetpu-custom-op"
EDGETPU_LIBRARY = "libedgetpu.so.1"
# Option names whose values metadata and logs do not show.
_SECRET = re.compile(r"secret|token|passw|credential|auth|api[_-]?key|private", re.IGNORECASE)
# The trial runs the model through the delegate once; a first inference may compile the graph (VX, GpuAcc).
TRIAL_TIMEOUT_S = 180.0
_TRIAL_MARK = "edgeservers-delegate-trial:"


def parse_options(text: str) -> dict[str, str]:
    """delegate_options as the strings load_delegate passes on: a JSON object (values strings, numbers or
    booleans) or key=value;key=value (values may hold commas and colons: device=usb:0,usb:1)."""
    text = text.strip()
    if not text:
        return {}
    expected = "expected a JSON object or key=value;key=value, e.g. device=usb:0"
    if text.startswith("{"):
        try:
            value = json.loads(text)
        except json.JSONDecodeError as e:
            raise ModelLoadError(
                f"parameter delegate_options: not JSON ({e.msg} at character {e.pos}); {expected}"
            ) from None
        if not isinstance(value, dict) or any(v is None or isinstance(v, dict | list) for v in value.values()):
            raise ModelLoadError(
                f"parameter delegate_options={text!r}: expected a JSON object of strings, numbers or booleans"
            )
        return {str(k): json.dumps(v) if isinstance(v, bool) else str(v) for k, v in value.items()}
    options = {}
    for part in filter(None, (p.strip() for p in text.split(";"))):
        key, equals, value = part.partition("=")
        if not equals or not key.strip():
            raise ModelLoadError(f"parameter delegate_options: {part!r} is not key=value; {expected}")
        options[key.strip()] = value.strip()
    return options


def shown(options: Mapping[str, str]) -> str:
    """Options as metadata and logs show them: key=value;... with secret-looking values masked."""
    return ";".join(f"{k}={'***' if _SECRET.search(k) else v}" for k, v in options.items())


@dataclass(frozen=True)
class DelegateConfig:
    """The delegate parameters, checked."""

    library: str
    options: tuple[tuple[str, str], ...]
    fallback: str  # settings.DELEGATE_FALLBACKS

    @classmethod
    def from_parameters(cls, delegate: str, delegate_options: str, fallback: str) -> DelegateConfig | None:
        """None when no delegate is set."""
        if not delegate:
            if delegate_options.strip():
                raise ModelLoadError("parameter delegate_options needs parameter delegate: the library they are for")
            return None
        return cls(delegate, tuple(parse_options(delegate_options).items()), fallback)

    @property
    def edgetpu(self) -> bool:
        return "edgetpu" in Path(self.library).name

    @property
    def devices(self) -> tuple[str, ...]:
        """Edge TPU devices listed in option `device` (usb:0,usb:1): libedgetpu takes one per delegate."""
        if not self.edgetpu:
            return ()
        return tuple(d.strip() for d in dict(self.options).get("device", "").split(",") if d.strip())

    def max_slots(self) -> int | None:
        """The most pool slots the device serves, None for no limit: an Edge TPU runs one interpreter at a
        time, so one slot per device listed (one when libedgetpu picks the device itself)."""
        return max(1, len(self.devices)) if self.edgetpu else None

    def slot_options(self, slots: int) -> list[dict[str, str]]:
        """The options of each slot's delegate instance: the same for all, except each Edge TPU slot names its device."""
        options = dict(self.options)
        if not self.devices:
            return [options] * slots
        return [{**options, "device": device} for device in self.devices[:slots]]

    def describe(self) -> str:
        return f"delegate {self.library}" + (f" (options {shown(dict(self.options))})" if self.options else "")


def _check_library(library: str) -> None:
    """The library loads and exports the delegate interface. Checked before load_delegate, which on a missing
    library or symbol raises from a half-built object whose finalizer then prints a traceback."""
    try:
        handle = ctypes.CDLL(library)
    except OSError as e:
        where = (
            ""
            if "/" in library
            else " (a file name is looked up on the library path: LD_LIBRARY_PATH, /etc/ld.so.conf)"
        )
        raise ModelLoadError(f"parameter delegate={library}: cannot load the library: {e}{where}") from None
    missing = [symbol for symbol in PLUGIN_SYMBOLS if not hasattr(handle, symbol)]
    if missing:
        raise ModelLoadError(
            f"parameter delegate={library}: not a TFLite external delegate: the library does not export {', '.join(missing)}"
        )


def load(config: DelegateConfig, options: Mapping[str, str]) -> Any:
    """One delegate instance (what an interpreter's experimental_delegates takes), or a ModelLoadError."""
    _check_library(config.library)
    try:
        return load_delegate(config.library, dict(options))
    except ValueError as e:  # the library's tflite_plugin_create_delegate returned NULL, saying why
        why = one_line(str(e).split("\n", 1)[-1]) or "no reason given"
        where = f" with options {shown(options)}" if options else ""
        raise ModelLoadError(f"delegate {config.library} could not be created{where}: {why}") from None


def one_line(text: str) -> str:
    return " ".join(text.split())


def delegated_nodes(interpreter: Any) -> tuple[int, int] | None:
    """(nodes the delegates took, nodes of the model) of an interpreter whose delegates are applied but
    whose tensors are not yet allocated (allocation adds TFLite's default XNNPACK delegate), or None.

    Neither TFLite Python API exposes the execution plan; the interpreter's experimental node listing
    (`_get_ops_details`, in LiteRT and tflite-runtime 2.14 alike) is the only view of the graph. It lists
    the model's nodes, then one DELEGATE node per partition a delegate took, whose inputs and outputs are
    the partition's: the nodes taken are those that produce its outputs, back to its inputs."""
    list_nodes = getattr(interpreter, "_get_ops_details", None)
    if list_nodes is None:
        return None
    nodes = list_nodes()
    partitions = [n for n in nodes if n["op_name"] == "DELEGATE"]
    model_nodes = {n["index"]: n for n in nodes if n["op_name"] != "DELEGATE"}
    producer = {int(t): index for index, n in model_nodes.items() for t in n["outputs"]}
    taken: set[int] = set()
    for partition in partitions:
        boundary = {int(t) for t in partition["inputs"]}
        todo = [int(t) for t in partition["outputs"]]
        while todo:
            tensor = todo.pop()
            index = producer.get(tensor)
            if tensor in boundary or index is None or index in taken:
                continue
            taken.add(index)
            todo.extend(int(t) for t in model_nodes[index]["inputs"] if t >= 0)
    return len(taken), len(model_nodes)


@dataclass(frozen=True)
class TrialResult:
    """What the trial at start found: why the delegate cannot run the model (None: it ran it), and how many
    of the model's nodes it took."""

    error: str | None
    nodes: tuple[int, int] | None = None

    def emit(self) -> None:
        """In the trial process: the one line of stdout the server reads."""
        print(_TRIAL_MARK + json.dumps({"error": self.error, "nodes": self.nodes}), flush=True)


def run_trial(model_path: Path, options: Mapping[str, Any]) -> TrialResult:
    """Run `python -m edgeservers.runtimes.delegate_trial` on the model with these runtime options and read its
    result. In a process of its own, a delegate that crashes (a segfault in a vendor library) or hangs
    cannot take the server with it, and the server's main process, which forks the workers, never opens
    the device (libusb state, as libedgetpu's, does not survive a fork)."""
    command = [sys.executable, "-m", "edgeservers.runtimes.delegate_trial", str(model_path), json.dumps(dict(options))]
    package_root = str(Path(__file__).resolve().parents[2])  # where this process found edgeservers
    path = os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=TRIAL_TIMEOUT_S, env={**os.environ, "PYTHONPATH": path}
        )
    except subprocess.TimeoutExpired:
        return TrialResult(
            f"delegate {options['delegate']} did not finish its trial on {model_path.name} within {TRIAL_TIMEOUT_S:.0f} s "
            "(creating it, handing it the model, one inference)"
        )
    for line in reversed(done.stdout.splitlines()):
        if line.startswith(_TRIAL_MARK):
            found = json.loads(line[len(_TRIAL_MARK) :])
            return TrialResult(found["error"], tuple(found["nodes"]) if found["nodes"] else None)
    last = one_line((done.stderr.strip().splitlines() or [""])[-1])
    if done.returncode < 0:
        how = f"was killed by {signal.Signals(-done.returncode).name}"
    else:
        how = f"exited with {done.returncode}"
    return TrialResult(
        f"delegate {options['delegate']} crashed its trial on {model_path.name}: the process {how}"
        + (f" ({last})" if last else "")
    )
