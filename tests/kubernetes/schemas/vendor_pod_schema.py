"""Writes tests/kubernetes/schemas/pod-v1.35-strict.json: Kubernetes 1.35's strict JSON schema of a Pod, for the pods that
use image volumes (`volumes[].image`, Kubernetes 1.33+), which kubernetes-validate 1.28.3 (the newest
release on the jsonschema 3.2 that seldon-core pins) does not know.

Source: the kubernetes-validate wheel from PyPI (Apache-2.0), which bundles the schemas generated from
Kubernetes' own OpenAPI document (Apache-2.0); `make k8s-pod-schema` downloads it with pip (no install)
and runs this script. Kept: pod-v1.json and the definitions it references, with every `$ref` made local
and the descriptions dropped (they are 85 % of the bytes and never checked).

    python tests/kubernetes/schemas/vendor_pod_schema.py kubernetes_validate-1.37.0-py3-none-any.whl
"""

from __future__ import annotations

import json
import sys
import zipfile
from pathlib import Path
from typing import Any

VERSION = "1.35"
OUT = Path(__file__).resolve().parent / f"pod-v{VERSION}-strict.json"


def _localised(node: Any) -> Any:
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if key == "description" and isinstance(value, str):
                continue
            if key == "$ref":
                value = "#/$defs/" + value.rsplit("/", 1)[-1]
            out[key] = _localised(value)
        return out
    if isinstance(node, list):
        return [_localised(v) for v in node]
    return node


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"].rsplit("/", 1)[-1]] if isinstance(node.get("$ref"), str) else []
        return found + [r for v in node.values() for r in _refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in _refs(v)]
    return []


def main(wheel: str) -> None:
    folder = f"kubernetes_validate/kubernetes-json-schema/v{VERSION}.0-local-strict/"
    with zipfile.ZipFile(wheel) as z:
        pod = json.loads(z.read(folder + "pod-v1.json"))
        defs = json.loads(z.read(folder + "_definitions.json"))["$defs"]
    needed: dict[str, Any] = {}
    todo = _refs(pod)
    while todo:
        name = todo.pop()
        if name not in needed:
            needed[name] = defs[name]
            todo += _refs(defs[name])
    schema = _localised(pod)
    schema["$defs"] = {name: _localised(needed[name]) for name in sorted(needed)}
    schema["$comment"] = (
        f"Kubernetes {VERSION} Pod (strict), from {Path(wheel).name}: see tests/kubernetes/schemas/README.md; "
        "regenerate with `make k8s-pod-schema`"
    )
    OUT.write_text(json.dumps(schema, indent=1, sort_keys=True) + "\n")
    print(f"wrote {OUT} ({len(needed)} definitions)")


if __name__ == "__main__":
    main(sys.argv[1])
