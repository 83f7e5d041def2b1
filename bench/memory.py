"""Where the memory of a running server goes: PSS, private (USS) and shared memory per process of its tree
(tests/support/memory.py measures it), as a Markdown table.

    .venv/bin/python -m bench.memory                       # TFLiteServer, chart defaults and GUNICORN_THREADS=8
    .venv/bin/python -m bench.memory --server OpenVINOServer --config defaults
    .venv/bin/python -m bench.memory --json                # one JSON object per configuration
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from tests.support.memory import CONFIGS, measure


def _mb(kb: int) -> str:
    return f"{kb / 1024:.1f}"


def table(result: dict[str, Any]) -> str:
    env = " ".join(f"{k}={v}" for k, v in result["env"].items())
    lines = [
        f"{result['server']}, {result['config']} ({env}), mobilenet_v2_quant, after {result['requests']} "
        f"REST binData predictions ({result['concurrency']} at once); "
        f"metrics on Prometheus: {'yes' if result['metrics_ok'] else 'NO'}",
        "",
        "| process | PSS alone MB | private in tree MB | PSS MB | USS MB | shared MB | RSS MB | PSS anon / file MB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]

    def alone(kb: int | None) -> str:
        return "n/a" if kb is None else _mb(kb)

    for p in sorted(result["processes"], key=lambda p: -(p["Pss_alone"] or p["Pss"])):
        uss = p["Private_Clean"] + p["Private_Dirty"]
        shared = p["Shared_Clean"] + p["Shared_Dirty"]
        lines.append(
            f"| {p['role']} | {alone(p['Pss_alone'])} | {alone(p['Private_alone'])} | {_mb(p['Pss'])} | {_mb(uss)} "
            f"| {_mb(shared)} | {_mb(p['Rss'])} | {_mb(p['Pss_Anon'])} / {_mb(p['Pss_File'])} |"
        )
    t = result["total"]
    alone_total = None if result["alone_pss_mb"] is None else sum(p["Pss_alone"] for p in result["processes"])
    private_total = None if alone_total is None else sum(p["Private_alone"] for p in result["processes"])
    lines.append(
        f"| **tree ({len(result['processes'])} processes)** | **{alone(alone_total)}** | {alone(private_total)} "
        f"| **{_mb(t['Pss'])}** | {_mb(t['Private_Clean'] + t['Private_Dirty'])} | | {_mb(t['Rss'])} "
        f"| {_mb(t['Pss_Anon'])} / {_mb(t['Pss_File'])} |"
    )
    for role, rows in result.get("detail", {}).items():
        lines += ["", f"{role}: mapping, PSS alone kB, private in tree kB"]
        lines += [f"    {name:70s} {pss:8.0f} {private:8.0f}" for name, pss, private in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", choices=["TFLiteServer", "OpenVINOServer"], action="append")
    parser.add_argument("--config", choices=sorted(CONFIGS), action="append")
    parser.add_argument("--requests", type=int, default=40)
    parser.add_argument("--env", action="append", default=[], help="NAME=VALUE added to the server's environment")
    parser.add_argument("--detail", type=int, default=0, help="show the N largest mappings of each process")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    env = dict(item.split("=", 1) for item in args.env)
    for interface in args.server or ["TFLiteServer"]:
        for config in args.config or ["defaults", "threads8"]:
            result = measure(interface, config, min(max(args.requests, 0), 1000), env=env, top=args.detail)
            print(json.dumps(result) if args.json else table(result) + "\n", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
