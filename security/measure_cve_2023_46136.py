"""Measure CVE-2023-46136 (Werkzeug < 3.0.1 multipart parser) in-process, on the installed Werkzeug.

The advisory: a multipart file part that starts with CR or LF and is followed by megabytes without
CR/LF is appended chunk by chunk to a growing buffer that is searched for the boundary each time, so
the parse costs time quadratic in the part's size. Seldon's wrapper reaches this parser through
`request.form` / `request.files` (seldon_core.flask_utils.get_multi_form_data_request) for every
`multipart/form-data` POST to /api/v1.0/predictions, which is exactly what this script calls.

For each size it times `Request(environ).files` (the parse Flask runs on first access) on
  * crafted: one `binData` file part of N bytes, "\\n" followed by N-1 bytes of "A" (no CR/LF),
  * normal:  the same N bytes of "A" with a "\\n" every 80 bytes (a text-like body, no leading CR/LF),
  * random:  N random bytes (what a JPEG looks like to the parser),
and prints the median CPU seconds of a few runs and the ratio crafted / normal. It asserts nothing
about timings. Usage:

    .venv/bin/python -m security.measure_cve_2023_46136            # 1, 5, 10, 16, 20 MiB (16 MiB: max_request_bytes)
    .venv/bin/python -m security.measure_cve_2023_46136 1 2 --repeat 1
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from importlib.metadata import version

from werkzeug.wrappers import Request

from tests.support.payloads import multipart, wsgi_environ

BOUNDARY = "----edgeserversCVE202346136"
MB = 1024 * 1024


def multipart_body(payload: bytes) -> tuple[str, bytes]:
    """(Content-Type, body) of a form with one `binData` file part holding `payload`."""
    return multipart({"binData": ("x.jpg", payload, "application/octet-stream")}, BOUNDARY)


def payload(kind: str, size: int) -> bytes:
    if kind == "crafted":
        return b"\n" + b"A" * (size - 1)
    if kind == "normal":
        line = b"A" * 79 + b"\n"
        return (line * (size // len(line) + 1))[:size]
    if kind == "random":
        return os.urandom(size)
    raise ValueError(kind)


def parse_cpu_seconds(form: tuple[str, bytes]) -> float:
    request = Request(wsgi_environ(*form))
    start = time.process_time()
    files = request.files  # parses the whole body, like request.form in Seldon's flask_utils
    elapsed = time.process_time() - start
    assert len(files["binData"].read()) > 0
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sizes_mb", nargs="*", type=float, default=[1, 5, 10, 16, 20], help="body sizes in MiB")
    parser.add_argument("--repeat", type=int, default=3, help="runs per case; the median is printed")
    args = parser.parse_args()

    print(
        f"Werkzeug {version('werkzeug')}, "
        f"Python {platform.python_version()}, {platform.machine()}, CPU time (time.process_time), "
        f"median of {args.repeat}"
    )
    print(
        f"{'size MiB':>8} {'crafted s':>10} {'normal s':>9} {'random s':>9} {'crafted/normal':>15} "
        f"{'crafted MiB/s':>13}"
    )
    for size_mb in args.sizes_mb:
        size = int(size_mb * MB)
        medians = {}
        for kind in ("crafted", "normal", "random"):
            body = multipart_body(payload(kind, size))
            medians[kind] = statistics.median(parse_cpu_seconds(body) for _ in range(args.repeat))
        ratio = medians["crafted"] / medians["normal"] if medians["normal"] else float("inf")
        print(
            f"{size_mb:>8g} {medians['crafted']:>10.3f} {medians['normal']:>9.3f} {medians['random']:>9.3f} "
            f"{ratio:>15.1f} {size_mb / medians['crafted'] if medians['crafted'] else 0:>13.1f}"
        )


if __name__ == "__main__":
    main()
