"""Where the time goes: pyinstrument over Seldon's own REST app and gRPC servicer, in-process.

    .venv/bin/python -m bench.profile [--model mobilenet_v2_quant] [--requests 40] [--out bench/results]

The server class is built exactly as the wrapper builds it (parameters -> __init__ -> load()), then
requests go through seldon_core.wrapper's Flask app (test client: JSON parsing, predict_raw, jsonify)
and its gRPC servicer (SeldonModelGRPC.Predict with a parsed SeldonMessage). What is left out is only
gunicorn's socket handling and gRPC's transport. Writes profile-<model>-<case>.txt (pyinstrument's text view).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from pyinstrument import Profiler
from seldon_core.metrics import SeldonMetrics
from seldon_core.proto import prediction_pb2
from seldon_core.wrapper import SeldonModelGRPC, get_rest_microservice

from . import load
from .launcher import ROOT
from .limits import Limits
from .run import ALL_MODELS, IMAGES


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="mobilenet_v2_quant", choices=list(ALL_MODELS))
    parser.add_argument("--server", default="TFLiteServer", choices=["TFLiteServer", "OpenVINOServer"])
    parser.add_argument("--requests", type=int, default=40)
    parser.add_argument("--num-threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--show-all", action="store_true", help="show library frames too")
    parser.add_argument("--cases", default="rest_image,rest_ndarray,grpc_tftensor,grpc_tensor")
    args = parser.parse_args()

    import importlib

    model = ALL_MODELS[args.model]
    params = {"model_uri": str(model.dir), "num_threads": args.num_threads, **model.params}
    server = getattr(importlib.import_module(args.server), args.server)(**params)
    server.load()
    metrics = SeldonMetrics()
    app = get_rest_microservice(server, metrics)
    client = app.test_client()
    servicer = SeldonModelGRPC(server, metrics)

    limits = Limits("tflite", params)
    jpeg = (IMAGES / model.image).read_bytes()
    tensor = limits.image_tensor(jpeg)
    bodies = {"rest_image": load.rest_image(jpeg), "rest_ndarray": load.rest_ndarray(tensor)}
    messages = {
        "grpc_tftensor": load.grpc_tftensor(tensor),
        "grpc_tensor": load.grpc_tensor(tensor),
        "grpc_image": load.grpc_image(jpeg),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    for case in args.cases.split(","):
        if case in bodies:

            def call(body=bodies[case]):
                response = client.post("/api/v1.0/predictions", data=body, content_type="application/json")
                assert response.status_code == 200, response.data[:300]
        else:

            def call(raw=messages[case]):
                # The transport hands the servicer a parsed message and serializes its answer: both are counted.
                request = prediction_pb2.SeldonMessage.FromString(raw)
                servicer.Predict(request, None).SerializeToString()

        for _ in range(3):
            call()
        profiler = Profiler(interval=0.0005)
        profiler.start()
        for _ in range(args.requests):
            call()
        profiler.stop()
        path = args.out / f"profile-{args.model}-{case}.txt"
        text = profiler.output_text(unicode=False, color=False, show_all=args.show_all)
        path.write_text(
            f"# {args.server} {args.model} {case}: {args.requests} requests, load average {os.getloadavg()}\n" + text
        )
        print(f"{case}: {profiler.last_session.duration / args.requests * 1000:.1f} ms/request (profiled) -> {path}")


if __name__ == "__main__":
    main()
