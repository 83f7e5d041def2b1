"""`make serve`: one model on this machine, on 127.0.0.1 only, with any server parameter.

    python -m edgeservers.local_serve MODEL [name=value ...] [--rest-port 9000] [--grpc-port 5000] [--metrics-port 6000]

Builds PREDICTIVE_UNIT_PARAMETERS from the name=value pairs, each typed as its `Settings` field (INT, FLOAT,
BOOL, STRING: what the operator's list carries), prints the requests that fit the model (a photo for an
image model, a tensor of the input's shape for any other), then becomes `seldon-core-microservice
TFLiteServer` (exec: the same process, so Ctrl-C stops the server). A parameter the server refuses is
reported by the server itself, in its one line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from .core import postprocess
from .core.images import geometry
from .core.modelfiles import find_model, read_labels
from .errors import ModelLoadError
from .runtimes.base import TensorSpec, select
from .runtimes.tflite import TFLiteOptions, TFLiteRuntime
from .settings import Settings, seldon_types

MICROSERVICE = Path(sys.executable).parent / "seldon-core-microservice"
SERVER_CLASS = "TFLiteServer"
# A bundled photo per kind of answer (images/README.md): an ImageNet bird, a face with a mask, a bird to segment.
PHOTOS = {"detection": "face_mask_demo.jpg", "segmentation": "bird_segmentation.bmp"}
DEFAULT_PHOTO = "parrot.jpg"
TENSOR_DIR = Path(".cache") / "serve"


def typed_parameters(values: Mapping[str, str]) -> list[dict[str, str]]:
    """Seldon's parameter list; a name the server does not know goes as a STRING for the server to name."""
    types = seldon_types()
    return [{"name": name, "value": value, "type": types.get(name, "STRING")} for name, value in values.items()]


def tensor_request(inputs: Sequence[TensorSpec], path: Path) -> Path:
    """A request of zeros in the inputs' shapes (a dynamic dimension as 1) and dtypes, written to `path`."""
    tensors = {spec.name: np.zeros([max(d, 1) for d in spec.shape], spec.dtype).tolist() for spec in inputs}
    body = {"data": {"ndarray": tensors.popitem()[1]}} if len(inputs) == 1 else {"jsonData": tensors}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(body, separators=(",", ":")))
    return path


def takes_images(spec: TensorSpec, layout: str) -> bool:
    """Whether image payloads fit this input: a fixed 4-D image tensor (the geometry the server reads)."""
    try:
        geometry(spec, layout)
    except ModelLoadError:
        return False
    return True


def requests_for(parameters: Mapping[str, str], rest_url: str, metrics_url: str) -> list[str]:
    """The commands to try the model with: a prediction that fits it, its OIP metadata and the metrics."""
    settings = Settings.from_parameters(parameters)
    model = find_model(Path(settings.model_uri), TFLiteRuntime.model_suffixes)
    inputs, outputs = TFLiteRuntime.inspect(model, TFLiteOptions(num_threads=1, pool_size=1))
    inputs = list(select(inputs, settings.input_names, "input"))
    outputs = list(select(outputs, settings.output_names, "output"))
    predictions = f"{rest_url}/api/v1.0/predictions"
    if len(inputs) == 1 and takes_images(inputs[0], settings.input_layout):
        kind = postprocess.resolve(
            settings.postprocess, outputs, read_labels(model, settings.labels, settings.label_names)
        )
        prediction = f"curl -s -F binData=@images/{PHOTOS.get(kind, DEFAULT_PHOTO)} {predictions}"
    else:
        body = tensor_request(inputs, TENSOR_DIR / f"{model.stem}.json")
        prediction = f"curl -s -H 'Content-Type: application/json' -d @{body} {predictions}"
    return [
        prediction,
        f"curl -s {rest_url}/v2/models/{settings.model_name or model.stem}   # Open Inference Protocol: metadata",
        f"curl -s {metrics_url}/metrics   # Prometheus",
    ]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="make serve", description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="model file or directory (DEMO_MODEL)")
    parser.add_argument("params", nargs="*", metavar="name=value", help="server parameters (PARAMS)")
    parser.add_argument("--rest-port", type=int, default=9000)
    parser.add_argument("--grpc-port", type=int, default=5000)
    parser.add_argument("--metrics-port", type=int, default=6000)
    args = parser.parse_args(argv)
    values = {"model_uri": str(Path(args.model).resolve()), "bind_address": "127.0.0.1"}
    for pair in args.params:
        name, equals, value = pair.partition("=")
        if not equals or not name:
            parser.exit(2, f"make serve: PARAMS takes name=value pairs, got {pair!r}\n")
        values[name] = value
    parameters = typed_parameters(values)
    print(f"Serving {args.model} on 127.0.0.1 only: REST :{args.rest_port}, gRPC :{args.grpc_port}, ", end="")
    print(
        f"metrics :{args.metrics_port}; parameters:",
        " ".join(f"{p['name']}={p['value']} ({p['type']})" for p in parameters),
    )
    try:
        commands = requests_for(values, f"http://127.0.0.1:{args.rest_port}", f"http://127.0.0.1:{args.metrics_port}")
        print("In another shell:", *(f"  {c}" for c in commands), sep="\n", flush=True)
    except ModelLoadError:
        sys.stdout.flush()  # the server names what is wrong, in its own one line
    os.environ.update(
        {
            "PREDICTIVE_UNIT_PARAMETERS": json.dumps(parameters),
            "PREDICTIVE_UNIT_HTTP_SERVICE_PORT": str(args.rest_port),
            "PREDICTIVE_UNIT_GRPC_SERVICE_PORT": str(args.grpc_port),
            "PREDICTIVE_UNIT_METRICS_SERVICE_PORT": str(args.metrics_port),
        }
    )
    command = [str(MICROSERVICE), SERVER_CLASS, "--service-type", "MODEL"]
    command += ["--http-port", str(args.rest_port), "--grpc-port", str(args.grpc_port)]
    os.execv(command[0], command)


if __name__ == "__main__":
    main()
