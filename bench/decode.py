"""Large camera frames: decode + preprocess time of a JPEG with the servers' reduced-scale decode
against a full decode, for 640x480, 1920x1080 and 4000x3000 frames (make bench prints the table).

    .venv/bin/python -m bench.decode [--repeat N]
"""

from __future__ import annotations

import argparse
import statistics
import time

import cv2
import numpy as np

from bench.limits import server_class
from edgeservers.core.images import decode_image
from edgeservers.seldon.component import EdgeModelServer
from tests.support import paths
from tests.support.images import camera_jpeg

SIZES = ((640, 480), (1920, 1080), (4000, 3000))
MODELS = {"mobilenet_v2_quant": {}, "face_mask": {"postprocess": "detection"}}


def p50_ms(call, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        call()
        times.append((time.perf_counter() - start) * 1000)
    return round(statistics.median(times), 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    print("| model (input) | frame | full decode + preprocess p50 ms | reduced decode + preprocess p50 ms | speed-up |")
    print("|---|---|---:|---:|---:|")
    for model, params in MODELS.items():
        server: EdgeModelServer = server_class("tflite")(model_uri=str(paths.MODELS / model), **params)
        image = server.model.image
        assert image is not None
        fit = (image.geometry.height, image.geometry.width)
        for width, height in SIZES:
            jpeg = camera_jpeg("parrot.jpg", width, height)
            full = p50_ms(
                lambda j=jpeg, i=image: i(cv2.imdecode(np.frombuffer(j, np.uint8), cv2.IMREAD_COLOR)), args.repeat
            )
            reduced = p50_ms(lambda j=jpeg, f=fit, i=image: i(decode_image(j, fit=f)[0]), args.repeat)
            print(f"| {model} ({fit[1]}x{fit[0]}) | {width}x{height} | {full} | {reduced} | {full / reduced:.1f}x |")


if __name__ == "__main__":
    main()
