"""How long one inference takes after the process was idle: what back-to-back benchmarks never see.

    .venv/bin/python -m bench.probes.idle [--num-threads 2] [--repeats 150]

Runs mobilenet_v2_quant in the plain interpreter (`num_threads` given) on parrot.jpg's input
tensor after a gap of 0 to 10 ms, the gap either slept (every core of the process idle, as a server
waiting for its next request) or spent spinning on the calling thread (its core busy, as while a JPEG
is decoded). Prints the median inference time per gap. On a virtual machine an idle core comes back
slowly, and an interpreter with a thread pool needs both of its cores back.
"""

from __future__ import annotations

import argparse
import statistics
import time

from bench.limits import Limits
from tests.support.paths import MOBILENET_V2, image_bytes

GAPS_MS = (0, 2, 4, 6, 10)


def _spin(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def measure(num_threads: int, repeats: int) -> dict[int, dict[str, float]]:
    """{gap ms: {"slept": median infer ms, "busy": median infer ms}}."""
    limits = Limits("tflite", {"model_uri": str(MOBILENET_V2), "num_threads": num_threads})
    infer = limits.invoke(limits.image_tensor(image_bytes("parrot.jpg")))()
    result: dict[int, dict[str, float]] = {}
    for gap in GAPS_MS:
        result[gap] = {}
        for how, wait in (("slept", time.sleep), ("busy", _spin)):
            times = []
            for _ in range(repeats):
                if gap:
                    wait(gap / 1000)
                start = time.perf_counter()
                infer()
                times.append(time.perf_counter() - start)
            result[gap][how] = 1000 * statistics.median(times)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=150)
    args = parser.parse_args()
    result = measure(args.num_threads, args.repeats)
    print(f"mobilenet_v2_quant, num_threads={args.num_threads}: median inference ms after a gap\n")
    print("| gap before each inference | slept (cores idle) | spinning (calling core busy) |\n|---|---:|---:|")
    for gap, row in result.items():
        print(f"| {gap} ms | {row['slept']:.2f} | {row['busy']:.2f} |")


if __name__ == "__main__":
    main()
