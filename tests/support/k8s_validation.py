"""Chart rendering and validation for the Kubernetes tests, without a cluster.

- `helm`: the real helm binary (`make tools` puts it in .cache/k8s-tools; the Makefile passes HELM).
- `sdep_errors`: a SeldonDeployment against the openAPIV3Schema of the SeldonDeployment CRD shipped in
  tests/kubernetes/schemas/ (a copy of Seldon Core v1's CRD), strict about unknown fields like the API server's
  `--validate=strict` field validation (the CRD schema alone would let a misspelt field through: the
  API server prunes it silently).
- `pod_errors`: each componentSpecs pod spec as a Pod against Kubernetes' own schemas, strict, of the
  oldest and the newest version we check (1.28 from kubernetes-validate; 1.35, which knows image
  volumes, vendored in tests/kubernetes/schemas/), plus the cross-field rules the API server enforces and no schema can
  express (mounts name existing volumes, unique names, at most one mount per path).

Run as a module to regenerate charts/examples/*.yaml from their values files: `make examples`.
"""

from __future__ import annotations

import copy
import functools
import json
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml

from tests.support.paths import ROOT

CHART = ROOT / "charts" / "edge-model"
EXAMPLES = ROOT / "charts" / "examples"
OPERATOR_VALUES = ROOT / "charts" / "operator-values.yaml"
DOCS = ROOT / "docs" / "kubernetes.md"
SCHEMAS = ROOT / "tests" / "kubernetes" / "schemas"
CRD = SCHEMAS / "seldondeployment-crd.yaml"
K8S_VERSION = "1.28"  # newest schema set in kubernetes-validate 1.28.3
K8S_VERSIONS = (K8S_VERSION, "1.35")  # 1.35: tests/kubernetes/schemas/pod-v1.35-strict.json (image volumes, 1.33+)

TOOLS_HINT = "run `make tools` (it fetches the pinned helm and kubectl into .cache/k8s-tools)"

# Labels that only make sense for a Helm-managed release; left out of the plain example manifests.
HELM_ONLY_LABELS = ("helm.sh/chart", "app.kubernetes.io/managed-by", "app.kubernetes.io/instance")


class ToolMissing(RuntimeError):
    pass


def tool(name: str) -> Path:
    """HELM / KUBECTL from the environment (the Makefile exports them), else the `make tools` location."""
    path = Path(os.environ.get(name.upper()) or ROOT / ".cache" / "k8s-tools" / name)
    if not path.is_absolute():
        path = ROOT / path
    if not (path.is_file() and os.access(path, os.X_OK)):
        raise ToolMissing(f"{name} not found at {path}: {TOOLS_HINT}")
    return path


def run_tool(name: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [str(tool(name)), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={
            **os.environ,
            "KUBECONFIG": os.devnull,
            "HELM_CACHE_HOME": str(ROOT / ".cache" / "helm"),
            "HELM_CONFIG_HOME": str(ROOT / ".cache" / "helm"),
            "HELM_DATA_HOME": str(ROOT / ".cache" / "helm"),
        },
    )
    if check and result.returncode != 0:
        raise AssertionError(f"{name} {' '.join(args)} failed ({result.returncode}):\n{result.stderr}{result.stdout}")
    return result


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return run_tool("helm", *args, check=check)


def value_args(values_files: Iterable[Path | str] = (), set_values: dict[str, Any] | None = None) -> list[str]:
    args: list[str] = []
    for f in values_files:
        args += ["-f", str(f)]
    for key, value in (set_values or {}).items():
        args += [
            "--set-json" if not isinstance(value, str) else "--set-string",
            f"{key}={json.dumps(value) if not isinstance(value, str) else value}",
        ]
    return args


def render(
    values_files: Iterable[Path | str] = (),
    set_values: dict[str, Any] | None = None,
    release: str = "edge",
    namespace: str = "default",
) -> list[dict]:
    """`helm template` of the edge-model chart: the parsed documents."""
    out = helm("template", release, str(CHART), "--namespace", namespace, *value_args(values_files, set_values)).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def render_one(*args: Any, **kwargs: Any) -> dict:
    docs = render(*args, **kwargs)
    assert [d["kind"] for d in docs] == ["SeldonDeployment"], [d["kind"] for d in docs]
    return docs[0]


# --- SeldonDeployment CRD schema -------------------------------------------------------------------


@functools.cache
def crd_schema(version: str = "v1") -> dict:
    crd = yaml.load(CRD.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    for v in crd["spec"]["versions"]:
        if v["name"] == version:
            return v["schema"]["openAPIV3Schema"]
    raise KeyError(version)


def strict_schema(schema: Any) -> Any:
    """The schema with unknown fields refused wherever it lists the fields of an object."""
    if isinstance(schema, dict):
        schema = {k: strict_schema(v) for k, v in schema.items()}
        if (
            "properties" in schema
            and "additionalProperties" not in schema
            and not schema.get("x-kubernetes-preserve-unknown-fields")
        ):
            schema["additionalProperties"] = False
        return schema
    if isinstance(schema, list):
        return [strict_schema(v) for v in schema]
    return schema


@functools.cache
def _sdep_validator() -> jsonschema.Draft4Validator:
    return jsonschema.Draft4Validator(strict_schema(crd_schema("v1")))


def where(error: jsonschema.ValidationError) -> str:
    return "/".join(str(p) for p in error.absolute_path) or "(root)"


def sdep_errors(doc: dict) -> list[str]:
    """Everything the CRD's v1 schema (strict) rejects in one SeldonDeployment, as 'path: message'."""
    errors = []
    if doc.get("apiVersion") != "machinelearning.seldon.io/v1" or doc.get("kind") != "SeldonDeployment":
        errors.append(
            f"(root): expected machinelearning.seldon.io/v1 SeldonDeployment, got {doc.get('apiVersion')} {doc.get('kind')}"
        )
    errors += sorted(f"{where(e)}: {e.message}" for e in _sdep_validator().iter_errors(doc))
    errors += [f"metadata/name: {m}" for m in dns_errors(doc.get("metadata", {}).get("name", ""), 63)]
    return errors


# --- Kubernetes pod schemas --------------------------------------------------------------------------


DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def dns_errors(name: str, limit: int) -> list[str]:
    if not name or len(name) > limit or not DNS_LABEL.match(name):
        return [f"{name!r} is not a DNS-1123 label of at most {limit} characters"]
    return []


def pods(sdep: dict) -> list[dict]:
    """Each componentSpecs entry as the Pod the operator's Deployment will create (metadata aside)."""
    result = []
    for p in sdep["spec"]["predictors"]:
        for i, component in enumerate(p.get("componentSpecs") or []):
            result.append(
                {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "metadata": {"name": f"{sdep['metadata']['name']}-{p['name']}-{i}"},
                    "spec": component["spec"],
                }
            )
    return result


@functools.cache
def k8s_validator(kind: str, version: str = K8S_VERSION) -> jsonschema.Draft4Validator:
    """Kubernetes' own schema for `kind` (e.g. pod-v1), strict variant, as packaged by kubernetes-validate
    (or, for a Pod of a newer version, as vendored in tests/kubernetes/schemas/).

    kubernetes_validate.validate() stops at the first error; this reports them all.
    """
    if version != K8S_VERSION:
        vendored = json.loads((SCHEMAS / f"{kind}-v{version}-strict.json").read_text())
        return jsonschema.Draft4Validator(vendored)
    folder = Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema" / f"v{K8S_VERSION}.0-local-strict"
    schema = json.loads((folder / f"{kind}.json").read_text())
    resolver = jsonschema.RefResolver(base_uri=folder.as_uri() + "/", referrer=schema)
    return jsonschema.Draft4Validator(schema, resolver=resolver)


QUANTITY = re.compile(r"^[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)(Ki|Mi|Gi|Ti|Pi|Ei|m|k|M|G|T|P|E|[eE][+-]?[0-9]+)?$")


def pod_errors(pod: dict, versions: Iterable[str] = K8S_VERSIONS) -> list[str]:
    """A Pod against Kubernetes' schemas of `versions` (strict: unknown fields refused) and the API server's
    cross-field rules. Errors of a version other than the oldest start with [<version>]."""
    errors = []
    for version in versions:
        tag = "" if version == K8S_VERSION else f"[{version}] "
        schema_name = "pod-v1" if version == K8S_VERSION else "pod"
        found = k8s_validator(schema_name, version).iter_errors(pod)
        errors += sorted(f"{tag}{where(e)}: {e.message}" for e in found)
    spec = pod.get("spec", {})
    containers = list(spec.get("initContainers") or []) + list(spec.get("containers") or [])
    volumes = [v.get("name") for v in spec.get("volumes") or []]
    for name, count in _counts(c.get("name") for c in containers).items():
        if count > 1:
            errors.append(f"spec: container name {name!r} used {count} times")
    for name, count in _counts(volumes).items():
        if count > 1:
            errors.append(f"spec/volumes: volume name {name!r} used {count} times")
    for c in containers:
        errors += [f"container {c.get('name')!r}: {m}" for m in dns_errors(c.get("name", ""), 63)]
        mounts = c.get("volumeMounts") or []
        for m in mounts:
            if m.get("name") not in volumes:
                errors.append(f"container {c.get('name')!r}: volumeMount {m.get('name')!r} names no volume")
        for path, count in _counts(m.get("mountPath") for m in mounts).items():
            if count > 1:
                errors.append(f"container {c.get('name')!r}: {count} mounts at {path}")
        for kind in ("requests", "limits"):
            for resource, value in ((c.get("resources") or {}).get(kind) or {}).items():
                if not QUANTITY.match(str(value)):
                    errors.append(
                        f"container {c.get('name')!r}: resources.{kind}.{resource}={value!r} is not a quantity"
                    )
        port_names = [p.get("name") for p in c.get("ports") or [] if p.get("name")]
        for pname in port_names:
            if len(pname) > 15 or not DNS_LABEL.match(pname):
                errors.append(f"container {c.get('name')!r}: port name {pname!r} is not an IANA_SVC_NAME")
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            port = ((c.get(probe) or {}).get("httpGet") or {}).get("port")
            if isinstance(port, str) and port not in port_names:
                errors.append(f"container {c.get('name')!r}: {probe} uses port {port!r}, which it does not declare")
    return errors


def _counts(items: Iterable[Any]) -> dict[Any, int]:
    counts: dict[Any, int] = {}
    for item in items:
        counts[item] = counts.get(item, 0) + 1
    return counts


def manifest_errors(doc: dict) -> list[str]:
    """A SeldonDeployment: the CRD schema, then every pod part against Kubernetes' schemas."""
    errors = sdep_errors(doc)
    for pod in pods(doc):
        errors += [f"{pod['metadata']['name']}: {m}" for m in pod_errors(pod)]
    return errors


# --- KServe's CRD schemas and any other document -----------------------------------------------------------

KSERVE_CRDS = SCHEMAS / "kserve"
KSERVE_KINDS = {
    ("serving.kserve.io/v1alpha1", "ClusterServingRuntime"): (
        "serving.kserve.io_clusterservingruntimes.yaml",
        "v1alpha1",
    ),
    ("serving.kserve.io/v1alpha1", "ServingRuntime"): ("serving.kserve.io_servingruntimes.yaml", "v1alpha1"),
    ("serving.kserve.io/v1beta1", "InferenceService"): ("serving.kserve.io_inferenceservices.yaml", "v1beta1"),
}


@functools.cache
def _kserve_validator(crd_file: str, version: str) -> jsonschema.Draft4Validator:
    crd = yaml.load((KSERVE_CRDS / crd_file).read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    (schema,) = [v["schema"]["openAPIV3Schema"] for v in crd["spec"]["versions"] if v["name"] == version]
    return jsonschema.Draft4Validator(strict_schema(schema))


def kserve_errors(doc: dict) -> list[str]:
    """A KServe resource against the openAPIV3Schema of its CRD in tests/kubernetes/schemas/kserve/ (strict)."""
    key = (doc.get("apiVersion"), doc.get("kind"))
    if key not in KSERVE_KINDS:
        return [f"(root): not a KServe kind this test knows: {key}"]
    errors = sorted(f"{where(e)}: {e.message}" for e in _kserve_validator(*KSERVE_KINDS[key]).iter_errors(doc))
    return errors + [f"metadata/name: {m}" for m in dns_errors(doc["metadata"].get("name", ""), 63)]


def _builtin_schema(doc: dict) -> str | None:
    """The kubernetes-validate schema name of a built-in kind (secret-v1, networkpolicy-networking-v1), if any."""
    group, _, version = str(doc.get("apiVersion", "")).rpartition("/")
    if group and not (group.endswith(".k8s.io") or group in ("apps", "batch", "policy", "autoscaling")):
        return None
    name = "-".join(p for p in (str(doc.get("kind", "")).lower(), group.split(".")[0], version) if p)
    folder = Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema" / f"v{K8S_VERSION}.0-local-strict"
    return name if (folder / f"{name}.json").is_file() else None


def document_errors(doc: dict) -> list[str] | None:
    """Any manifest against the schema this repository has for its kind: the SeldonDeployment CRD (and its pods),
    KServe's CRDs, Kubernetes' own kinds; None for a kind with no schema here (another project's CRD)."""
    key = (doc.get("apiVersion"), doc.get("kind"))
    if key == ("machinelearning.seldon.io/v1", "SeldonDeployment"):
        return manifest_errors(doc)
    if key in KSERVE_KINDS:
        return kserve_errors(doc)
    schema = _builtin_schema(doc)
    if schema is None:
        return None
    return sorted(f"{where(e)}: {e.message}" for e in k8s_validator(schema).iter_errors(doc))


# --- docs/kubernetes.md -------------------------------------------------------------------------------


def doc_commands(doc: Path = DOCS) -> list[list[str]]:
    """Shell commands in the doc's ```sh blocks (backslash continuations joined), as argument lists."""
    text = doc.read_text()
    commands = []
    for block in re.findall(r"```(?:sh|bash|shell)\n(.*?)```", text, re.S):
        for command in re.sub(r"\\\n\s*", " ", block).splitlines():
            command = command.strip()
            if command and not command.startswith("#"):
                commands.append(shlex.split(command, comments=True))
    return commands


def find_command(*prefix: str) -> list[list[str]]:
    found = [c for c in doc_commands() if c[: len(prefix)] == list(prefix)]
    assert found, f"docs/kubernetes.md has no `{' '.join(prefix)} ...` command"
    return found


# --- examples -----------------------------------------------------------------------------------------


def example_pairs() -> list[tuple[Path, Path]]:
    """(values file, manifest) for every example: charts/examples/<name>.values.yaml -> <name>.yaml."""
    return [(v, v.with_name(v.name.replace(".values.yaml", ".yaml"))) for v in sorted(EXAMPLES.glob("*.values.yaml"))]


def plain(doc: dict) -> dict:
    """A rendered SeldonDeployment as a plain manifest: no namespace (kubectl -n picks it), no Helm labels."""
    doc = copy.deepcopy(doc)
    doc["metadata"].pop("namespace", None)
    labels = doc["metadata"].get("labels", {})
    for key in HELM_ONLY_LABELS:
        labels.pop(key, None)
    return doc


def render_example(values_file: Path) -> dict:
    return plain(render_one([values_file], release=values_file.name.replace(".values.yaml", "")))


def write_examples() -> None:
    for values_file, manifest in example_pairs():
        about = []
        for line in values_file.read_text().splitlines():
            if not line.startswith("#"):
                break
            about.append(line)
        header = (
            "\n".join(
                [
                    *about,
                    f"# Plain manifest for users without Helm:  kubectl apply -n <namespace> -f charts/examples/{manifest.name}",
                    f"# Generated by `make examples` from {values_file.name} with the edge-model chart; do not edit by hand.",
                ]
            )
            + "\n"
        )
        body = yaml.safe_dump(render_example(values_file), sort_keys=False, width=120)
        manifest.write_text(header + body)
        print(f"wrote {manifest.relative_to(ROOT)}")


if __name__ == "__main__":
    if sys.argv[1:] != ["--write-examples"]:
        sys.exit("usage: python -m tests.support.k8s_validation --write-examples")
    write_examples()
