"""A rendered SeldonDeployment's pod, run the way the Seldon v1 operator and the kubelet would run it, with
real processes and no cluster (tests/kubernetes/test_contract.py says what differs from a cluster):

- `operator_env`: the model container's environment exactly as the operator derives it;
- `Volumes`: emptyDir volumes as temporary directories, hostPath volumes under a temporary "node" root;
- `PodRun`: the init containers' args run as their image's ENTRYPOINT does (`python -m edgeservers.storage`),
  then the server as the image's entrypoint starts it, on free loopback ports.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import requests
import yaml

from tests.support import k8s_validation as kv
from tests.support.harness import LOOPBACK_SHIM, MICROSERVICE, ServerProcess, free_port, http_ok
from tests.support.paths import IMAGES, ROOT

MANIFEST = ".edgeservers-model.json"  # what the initializer writes beside the model (edgeservers.storage.cache)

PYTHON = Path(sys.executable)  # the venv's python: the image's ENTRYPOINT is `python -m edgeservers.storage`
START_TIMEOUT = 180  # generous for slow CI machines; nothing asserts on timings

# The Seldon v1 operator's constants (operator/constants/constants.go, controllers/model_initializer_injector.go).
FIRST_HTTP_PORT, FIRST_GRPC_PORT, FIRST_METRICS_PORT = 9000, 9500, 6000
DEFAULT_MODEL_LOCAL_MOUNT_PATH = "/mnt/models"
PROMETHEUS_PATH = "/prometheus"


# --- the operator's view -----------------------------------------------------------------------------


def go_json(value) -> str:
    """encoding/json.Marshal's compact form."""
    return json.dumps(value, separators=(",", ":"))


def port(container: dict, name: str, default: int) -> int:
    """The webhook keeps a container port of this name (defaults.go setContainerPredictiveUnitDefaults)."""
    for p in container.get("ports") or []:
        if p.get("name") == name:
            return p["containerPort"]
    return default


def prepack_image(implementation: str) -> str:
    """PredictorServerConfig.PrepackImageName for the seldon protocol, from our operator values."""
    servers = yaml.safe_load(kv.OPERATOR_VALUES.read_text())["predictor_servers"]
    seldon = servers[implementation]["protocols"]["seldon"]
    return (
        f"{seldon['image']}:{seldon['defaultImageVersion']}" if seldon.get("defaultImageVersion") else seldon["image"]
    )


def operator_env(sdep: dict, predictor: dict, container: dict) -> dict[str, str]:
    """The model container's environment in the Deployment the Seldon v1 operator (1.17) creates.

    - webhook defaults (apis/machinelearning.seldon.io/v1/defaults.go): the graph unit's http/grpc ports
      are the container's ports named "http"/"grpc" (else 9000/9500 on), a "metrics" port is added if
      missing (6000 on), the predictor gets the label version=<predictor name>, and an empty image of a
      prepackaged server becomes predictor_servers' <image>:<defaultImageVersion>;
    - createContainerService (controllers/seldondeployment_controller.go): appended after the
      container's own env, PREDICTIVE_UNIT_SERVICE_PORT (http for REST), PREDICTIVE_UNIT_HTTP_SERVICE_PORT,
      PREDICTIVE_UNIT_GRPC_SERVICE_PORT (each unless already set), PREDICTIVE_UNIT_PARAMETERS (the graph
      parameters, unless set), PREDICTIVE_UNIT_ID, PREDICTIVE_UNIT_IMAGE, PREDICTOR_ID, PREDICTOR_LABELS,
      SELDON_DEPLOYMENT_ID, SELDON_EXECUTOR_ENABLED, and for the "metrics" port
      PREDICTIVE_UNIT_METRICS_SERVICE_PORT and PREDICTIVE_UNIT_METRICS_ENDPOINT (/prometheus);
    - addModelDefaultServers (controllers/seldondeployment_prepackaged_servers.go): PREDICTIVE_UNIT_PARAMETERS
      is replaced by the graph parameters plus {"name": "model_uri", "type": "STRING", "value": "/mnt/models"}.
    """
    graph = predictor["graph"]
    assert graph["name"] == container["name"], "Seldon pairs the graph unit and the container by name"
    env = {e["name"]: e["value"] for e in container.get("env") or []}
    http_port = port(container, "http", FIRST_HTTP_PORT)
    grpc_port = port(container, "grpc", FIRST_GRPC_PORT)
    metrics_port = port(container, "metrics", FIRST_METRICS_PORT)
    parameters = [{"name": p["name"], "value": p["value"], "type": p["type"]} for p in graph.get("parameters") or []]
    image = container.get("image") or prepack_image(graph["implementation"])
    labels = {
        **(predictor.get("labels") or {}),
        "version": (predictor.get("labels") or {}).get("version", predictor["name"]),
    }
    for name, value in (
        ("PREDICTIVE_UNIT_SERVICE_PORT", str(http_port)),
        ("PREDICTIVE_UNIT_HTTP_SERVICE_PORT", str(http_port)),
        ("PREDICTIVE_UNIT_GRPC_SERVICE_PORT", str(grpc_port)),
    ):
        env.setdefault(name, value)
    if parameters:
        env.setdefault("PREDICTIVE_UNIT_PARAMETERS", go_json(parameters))
    env.update(
        {
            "PREDICTIVE_UNIT_ID": container["name"],
            "PREDICTIVE_UNIT_IMAGE": image,
            "PREDICTOR_ID": predictor["name"],
            "PREDICTOR_LABELS": go_json(dict(sorted(labels.items()))),
            "SELDON_DEPLOYMENT_ID": sdep["metadata"]["name"],
            "SELDON_EXECUTOR_ENABLED": "true",
            "PREDICTIVE_UNIT_METRICS_SERVICE_PORT": str(metrics_port),
            "PREDICTIVE_UNIT_METRICS_ENDPOINT": PROMETHEUS_PATH,
        }
    )
    env["PREDICTIVE_UNIT_PARAMETERS"] = go_json(
        parameters + [{"name": "model_uri", "value": DEFAULT_MODEL_LOCAL_MOUNT_PATH, "type": "STRING"}]
    )
    return env


# --- the kubelet's view: volumes and mounts ---------------------------------------------------------


class Volumes:
    """emptyDir volumes as temporary directories, hostPath volumes under `node` (the node's filesystem,
    which outlives a pod); container paths mapped through each container's mounts."""

    def __init__(self, pod_spec: dict, root: Path, node: Path | None = None):
        self.dirs = {}
        for volume in pod_spec.get("volumes") or []:
            if "hostPath" in volume:
                # DirectoryOrCreate: the kubelet creates it, as root. Directory: the node's own preparation (e.g. a
                # delegate library's directory), which the node of these tests has, empty.
                assert node is not None and volume["hostPath"]["type"] in ("DirectoryOrCreate", "Directory"), volume
                self.dirs[volume["name"]] = node / volume["hostPath"]["path"].lstrip("/")
                self.dirs[volume["name"]].mkdir(parents=True, exist_ok=True)
                continue
            assert "emptyDir" in volume, f"the contract test only knows emptyDir and hostPath volumes: {volume}"
            self.dirs[volume["name"]] = root / volume["name"]
            self.dirs[volume["name"]].mkdir(parents=True)

    def host_path(self, container: dict, path: str) -> str:
        """The host directory behind `path` in `container`, or `path` itself when no mount covers it."""
        mounts = sorted(container.get("volumeMounts") or [], key=lambda m: -len(m["mountPath"]))
        for m in mounts:
            mount = m["mountPath"].rstrip("/")
            if path == mount or path.startswith(mount + "/"):
                return str(self.dirs[m["name"]]) + path[len(mount) :]
        return path


def model_initializer(sdep: dict) -> dict:
    """The init container that downloads the model (named as the operator names its own)."""
    (spec,) = [c["spec"] for c in sdep["spec"]["predictors"][0]["componentSpecs"]]
    (init,) = [c for c in spec["initContainers"] if c["name"].endswith("-model-initializer")]
    return init


class PodRun:
    """One rendered pod, run locally: init containers, then the model container."""

    def __init__(self, sdep: dict, root: Path, node: Path):
        self.sdep = sdep
        (self.predictor,) = sdep["spec"]["predictors"]
        (component,) = self.predictor["componentSpecs"]
        self.spec = component["spec"]
        self.volumes = Volumes(self.spec, root / "volumes", node)
        self.root = root
        self.server: ServerProcess | None = None

    def container_env(self, container: dict, secrets: dict[str, dict[str, str]]) -> dict[str, str]:
        """A clean environment, as in the container: envFrom secrets, then env; TMPDIR on the /tmp volume."""
        env = {
            "PATH": os.environ["PATH"],
            "LANG": "C.UTF-8",
            "HOME": self.volumes.host_path(container, "/tmp"),
            "TMPDIR": self.volumes.host_path(container, "/tmp"),
        }
        for source in container.get("envFrom") or []:
            env.update(secrets[source["secretRef"]["name"]])  # a missing Secret stops the pod: KeyError here
        env.update({e["name"]: e["value"] for e in container.get("env") or []})
        return env

    def run_init_containers(self, secrets: dict[str, dict[str, str]] | None = None) -> list[str]:
        """Each init container in order; what each printed (its one line)."""
        lines = []
        for init in self.spec.get("initContainers") or []:
            assert init["image"].rsplit(":", 1)[0].endswith("/edgeservers-storage-initializer"), init["image"]
            assert "command" not in init, "the image's ENTRYPOINT must stay in charge"
            args = [self.volumes.host_path(init, a) if a.startswith("/") else a for a in init["args"]]
            env = self.container_env(init, secrets or {})
            env["PYTHONPATH"] = str(ROOT)  # the image has edgeservers installed; here it is the checkout
            result = subprocess.run(
                [str(PYTHON), "-m", "edgeservers.storage", *args],
                cwd=ROOT,
                capture_output=True,
                text=True,
                env=env,
                timeout=120,
            )
            assert result.returncode == 0, f"init container {init['name']} failed:\n{result.stderr}"
            lines.append(result.stdout.strip())
        return lines

    def start_server(self, secrets: dict[str, dict[str, str]] | None = None) -> dict[str, str]:
        (container,) = self.spec["containers"]
        env = operator_env(self.sdep, self.predictor, container)
        # Same variables, free loopback ports; the model path through the volume mapping.
        ports = {
            str(FIRST_HTTP_PORT): str(free_port()),
            str(FIRST_GRPC_PORT): str(free_port()),
            str(FIRST_METRICS_PORT): str(free_port()),
        }
        for name in (
            "PREDICTIVE_UNIT_SERVICE_PORT",
            "PREDICTIVE_UNIT_HTTP_SERVICE_PORT",
            "PREDICTIVE_UNIT_GRPC_SERVICE_PORT",
            "PREDICTIVE_UNIT_METRICS_SERVICE_PORT",
        ):
            env[name] = ports[env[name]]
        parameters = json.loads(env["PREDICTIVE_UNIT_PARAMETERS"])
        for p in parameters:  # the model path, and any other path a volume holds (the uncertain spool)
            p["value"] = self.volumes.host_path(container, p["value"]) if p["value"].startswith("/") else p["value"]
        env["PREDICTIVE_UNIT_PARAMETERS"] = json.dumps(parameters)
        process_env = {
            **self.container_env(container, secrets or {}),
            **env,
            "PYTHONPATH": os.pathsep.join([str(LOOPBACK_SHIM), str(ROOT)]),
        }
        self.url = f"http://127.0.0.1:{env['PREDICTIVE_UNIT_HTTP_SERVICE_PORT']}"
        self.metrics_url = f"http://127.0.0.1:{env['PREDICTIVE_UNIT_METRICS_SERVICE_PORT']}"
        self.server = ServerProcess([str(MICROSERVICE), env["MODEL_NAME"], "--service-type", "MODEL"], process_env)
        # The REST server and the metrics server are separate processes: wait for both.
        self.server.start(
            lambda: (
                http_ok(self.url + "/health/ping", timeout=2)
                and http_ok(self.metrics_url + env["PREDICTIVE_UNIT_METRICS_ENDPOINT"], timeout=2)
            ),
            timeout=START_TIMEOUT,
            poll=0.3,
        )
        return env

    def predict(self, image: str) -> Any:
        """The jsonData answer to a photo from images/ posted as docs/kubernetes.md's curl sends it (a form file)."""
        with open(IMAGES / image, "rb") as photo:
            return self.answer(files={"binData": photo})

    def answer(self, **body: Any) -> Any:
        """The jsonData answer to a REST prediction with `body` (requests' json=, files=)."""
        reply = requests.post(self.url + "/api/v1.0/predictions", timeout=60, **body)
        assert reply.status_code == 200, reply.text
        return reply.json()["jsonData"]

    def stop(self) -> None:
        if self.server:
            self.server.stop(timeout=30)
