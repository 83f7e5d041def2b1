"""The real Triton client (`tritonclient[http,grpc]`) in its own venv: plans of calls run by one client process
(tests/support/oip_client.py, with the client venv's python), and the answers read back."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.support.paths import ROOT

CLIENT_PYTHON = Path(os.environ.get("OIP_CLIENT_PYTHON") or ROOT / ".venv-client" / "bin" / "python")
CLIENT = Path(__file__).resolve().parent / "oip_client.py"


class TritonClient:
    """Plans of tritonclient calls run in the client venv, by one client process (tritonclient
    imported once, not once per plan); arrays in and out as .npy files."""

    def __init__(self, tmp: Path):
        if not CLIENT_PYTHON.exists():
            pytest.fail(
                f"{CLIENT_PYTHON} missing: run `make client-venv` (tritonclient in its own venv)", pytrace=False
            )
        self.tmp = tmp
        self.count = 0
        self.errors = tmp / "client-stderr.txt"
        with self.errors.open("w") as errors:
            self.process = subprocess.Popen(
                [str(CLIENT_PYTHON), str(CLIENT)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=errors,
                text=True,
            )

    def close(self) -> None:
        self.process.communicate("\n", timeout=60)  # an empty line ends the client's loop

    def npy(self, array: np.ndarray) -> str:
        self.count += 1
        path = self.tmp / f"in-{self.count}.npy"
        np.save(path, array)
        return str(path)

    def file(self, data: bytes) -> str:
        self.count += 1
        path = self.tmp / f"in-{self.count}.bin"
        path.write_bytes(data)
        return str(path)

    def run(self, calls: list[dict], parallel: bool = False) -> list[list[dict]]:
        self.count += 1
        work = self.tmp / f"plan-{self.count}"
        work.mkdir()
        (work / "plan.json").write_text(json.dumps({"calls": calls, "parallel": parallel}))
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(f"{work / 'plan.json'}\t{work / 'results.json'}\n")
        self.process.stdin.flush()
        answer = self.process.stdout.readline()
        assert answer == "done\n", self.errors.read_text()[-3000:]
        return json.loads((work / "results.json").read_text())

    def one(self, call: dict) -> dict:
        return self.run([call])[0][0]


def ok(result: dict) -> Any:
    assert result["ok"], result
    return result["value"]


def output(value: dict, name: str) -> np.ndarray | list[str]:
    entry = value["outputs"][name]
    return entry["bytes"] if "bytes" in entry else np.load(entry["npy"])


def endpoints(server: Any) -> dict[str, str]:
    return {"http": f"127.0.0.1:{server.http_port}", "grpc": f"127.0.0.1:{server.grpc_port}"}


def call(server: Any, protocol: str, op: str, model: str = "", **kwargs: Any) -> dict:
    return {"protocol": protocol, "url": endpoints(server)[protocol], "op": op, "model": model, **kwargs}
