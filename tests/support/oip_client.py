"""The real Triton client (`tritonclient[http,grpc]`) driving a server: run with the client venv's python.

tritonclient needs urllib3>=2 and protobuf>=6, which seldon-core 1.17.1's pins rule out, so it lives in
its own venv (`make client-venv`, from requirements-client.txt) and the tests run this script in a
subprocess, `.venv-client/bin/python tests/support/oip_client.py`, which reads one "plan.json<TAB>results.json" per
line of stdin (one process for a whole test module: tritonclient is imported once).

plan.json: {"calls": [call, ...], "parallel": false}; each call:
  {"protocol": "http" | "grpc", "url": "127.0.0.1:PORT", "op": "live" | "ready" | "server_metadata" |
   "model_ready" | "metadata" | "infer", "model": NAME, "version": "",
   "inputs": [{"name", "datatype", "npy": PATH} | {"name", "datatype": "BYTES", "files": [PATH, ...]}],
   "binary": true,                      # http: the binary tensor data extension for inputs
   "outputs": [{"name", "class_count": 0, "binary": true}] or null (all),
   "repeat": 1}
With "parallel": true every call runs in its own thread (all started together).
results.json: one entry per call, a list of `repeat` results: {"ok": true, "value": ...} or
{"ok": false, "status": "400" | "StatusCode.INVALID_ARGUMENT" ..., "message": ...}. Numeric outputs
are written as .npy files beside results.json; BYTES outputs come back as lists of strings.
"""

from __future__ import annotations

import json
import sys
import threading
from pathlib import Path

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException


def client(call: dict):
    if call["protocol"] == "http":
        return httpclient, httpclient.InferenceServerClient(
            call["url"], network_timeout=120.0, connection_timeout=120.0
        )
    return grpcclient, grpcclient.InferenceServerClient(call["url"])


def infer(module, conn, call: dict, out_dir: Path, tag: str) -> dict:
    http = module is httpclient
    inputs = []
    for spec in call["inputs"]:
        if "files" in spec:
            array = np.array([Path(f).read_bytes() for f in spec["files"]], dtype=np.object_)
        else:
            array = np.load(spec["npy"])
        tensor = module.InferInput(spec["name"], list(spec.get("shape", array.shape)), spec["datatype"])
        if http:
            tensor.set_data_from_numpy(array, binary_data=call.get("binary", True))
        else:
            tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    outputs = None
    if call.get("outputs") is not None:
        outputs = []
        for o in call["outputs"]:
            if http:
                outputs.append(
                    module.InferRequestedOutput(
                        o["name"], binary_data=o.get("binary", True), class_count=o.get("class_count", 0)
                    )
                )
            else:
                outputs.append(module.InferRequestedOutput(o["name"], class_count=o.get("class_count", 0)))
    result = conn.infer(call["model"], inputs, model_version=call.get("version", ""), outputs=outputs)
    response = result.get_response() if http else result.get_response(as_json=True)
    value: dict = {"outputs": {}, "parameters": response.get("parameters", {})}
    for i, out in enumerate(response["outputs"]):
        array = result.as_numpy(out["name"])
        entry = {"datatype": out["datatype"], "shape": [int(d) for d in out["shape"]]}
        if out["datatype"] == "BYTES":
            entry["bytes"] = [e.decode() if isinstance(e, bytes) else str(e) for e in array.reshape(-1)]
        else:
            path = out_dir / f"{tag}-{i}.npy"
            np.save(path, array)
            entry["npy"] = str(path)
        value["outputs"][out["name"]] = entry
    return value


def run(call: dict, out_dir: Path, tag: str) -> dict:
    module, conn = client(call)
    try:
        op = call["op"]
        if op == "live":
            value = conn.is_server_live()
        elif op == "ready":
            value = conn.is_server_ready()
        elif op == "model_ready":
            value = conn.is_model_ready(call["model"], call.get("version", ""))
        elif op == "server_metadata":
            value = conn.get_server_metadata() if module is httpclient else conn.get_server_metadata(as_json=True)
        elif op == "metadata":
            args = (call["model"], call.get("version", ""))
            value = (
                conn.get_model_metadata(*args) if module is httpclient else conn.get_model_metadata(*args, as_json=True)
            )
        elif op == "infer":
            value = infer(module, conn, call, out_dir, tag)
        else:
            raise ValueError(f"unknown op {op}")
        return {"ok": True, "value": value}
    except InferenceServerException as e:
        return {"ok": False, "status": str(e.status()), "message": e.message()}
    finally:
        conn.close()


def main(plan_path: str, results_path: str) -> None:
    plan = json.loads(Path(plan_path).read_text())
    out_dir = Path(results_path).parent
    calls = plan["calls"]
    results: list[list[dict]] = [[] for _ in calls]

    def work(i: int) -> None:
        for r in range(calls[i].get("repeat", 1)):
            results[i].append(run(calls[i], out_dir, f"c{i}-r{r}"))

    if plan.get("parallel"):
        threads = [threading.Thread(target=work, args=(i,)) for i in range(len(calls))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    else:
        for i in range(len(calls)):
            work(i)
    Path(results_path).write_text(json.dumps(results))


def serve() -> None:
    """One plan per stdin line ("plan.json<TAB>results.json"), answered "done" on stdout once its results
    are written; a failing plan's traceback goes to stderr and ends the process, as does an empty line
    (stdin's end may never come: processes forked by the tests inherit its write end)."""
    for line in sys.stdin:
        if line == "\n":
            return
        main(*line.rstrip("\n").split("\t"))
        print("done", flush=True)


if __name__ == "__main__":
    serve()
