#!/usr/bin/env python3
"""The image references in charts/, written from one place: mk/images.mk (`make image-refs`).

    image_refs.py --registry ghcr.io/edgeservers --server edgeservers --initializer edgeservers-storage-initializer
                  --version 0.1.0 [--check]

Every non-empty `image:` in charts/ (the chart's values and examples, the operator values, the KServe
manifests) names one of our images: the storage initializer where it sits under `initContainers` or
`storageInitializer`, else the server, whose flavour tag (-openvino) is kept. A server image whose tag
has another suffix is a user's own image built from ours (e.g. `...:0.1.0-vx`, adding a delegate) and
is left as it is. The operator values carry
the server's repository and tag apart (`image`, `defaultImageVersion`). Only those values change;
comments and layout stay. With --check nothing is written: the files that differ are listed, exit 1.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
TEMPLATES = ROOT / "charts" / "edge-model" / "templates"  # Go templates, not YAML: they name no image
FLAVOURS = ("-openvino",)  # tag suffixes of the server's variants (docs/images.md)
VALUE_LINE = re.compile(
    r"^(?P<lead>\s*(?:-\s+)?(?P<key>image|defaultImageVersion):\s*)(?P<q>[\"']?)(?P<value>[^\"'#\s]+)(?P=q)\s*$"
)


@dataclass(frozen=True)
class Images:
    registry: str
    server: str
    initializer: str
    version: str

    def server_ref(self, current: str) -> str:
        """The server's reference: with a tag (the version plus the current flavour) when `current` has one."""
        return f"{self.registry}/{self.server}" + (f":{self.tag(current)}" if ":" in current.rsplit("/", 1)[-1] else "")

    def tag(self, current: str) -> str:
        return self.version + next((f for f in FLAVOURS if current.endswith(f)), "")


def ours(reference: str) -> bool:
    """A server reference of ours: no tag, or a version with at most one of our flavours."""
    name = reference.rsplit("/", 1)[-1]
    return (
        ":" not in name or re.fullmatch(r"[0-9][^-]*(" + "|".join(FLAVOURS) + ")?", name.split(":", 1)[1]) is not None
    )


def wanted(node: Any, images: Images, initializer: bool = False) -> Iterator[tuple[str, str, str]]:
    """(key, current value, wanted value) for every image reference in a parsed YAML document."""
    if isinstance(node, list):
        for item in node:
            yield from wanted(item, images, initializer)
    elif isinstance(node, dict):
        for key, value in node.items():
            if key == "image" and isinstance(value, str) and value:
                if initializer:
                    yield key, value, f"{images.registry}/{images.initializer}:{images.version}"
                elif ours(value):
                    yield key, value, images.server_ref(value)
            elif key == "defaultImageVersion" and isinstance(value, str):
                yield key, value, images.tag(value)
            else:
                yield from wanted(value, images, initializer or key in ("initContainers", "storageInitializer"))


def rewritten(text: str, images: Images) -> str:
    """`text` with every image reference as `images` says; everything else as it was."""
    changes = {(k, old): new for doc in yaml.safe_load_all(text) for k, old, new in wanted(doc, images)}
    lines = []
    for line in text.splitlines(keepends=True):
        m = VALUE_LINE.match(line.rstrip("\n"))
        if m and (m["key"], m["value"]) in changes:
            line = f"{m['lead']}{m['q']}{changes[m['key'], m['value']]}{m['q']}\n"
        lines.append(line)
    return "".join(lines)


def chart_files() -> list[Path]:
    return sorted(p for p in (ROOT / "charts").rglob("*.yaml") if TEMPLATES not in p.parents)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--registry", required=True, help="registry and namespace, e.g. ghcr.io/edgeservers")
    parser.add_argument("--server", required=True, help="the server image's name")
    parser.add_argument("--initializer", required=True, help="the storage initializer image's name")
    parser.add_argument("--version", required=True)
    parser.add_argument("--check", action="store_true", help="write nothing; list the files that differ")
    args = parser.parse_args()
    images = Images(args.registry.rstrip("/"), args.server, args.initializer, args.version)
    stale = []
    for path in chart_files():
        text = path.read_text()
        new = rewritten(text, images)
        if new != text:
            stale.append(str(path.relative_to(ROOT)))
            if not args.check:
                path.write_text(new)
    if args.check and stale:
        print(f"image references differ from mk/images.mk in: {', '.join(stale)} (run `make image-refs`)")
        return 1
    print("\n".join(f"wrote {p}" for p in stale) if stale else "image references: up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
