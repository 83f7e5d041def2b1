"""Finding the model file and its labels from `model_uri` (a local file or directory, or a remote URI)."""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

from .. import storage
from ..errors import ModelLoadError

LABELS_FILE = "labels.txt"
log = logging.getLogger(__name__)


def local_model_dir(model_uri: str, cache_dir: str = "") -> Path:
    """A local path for `model_uri`, downloading it first when it is remote (s3://, https://, ...): through
    the model cache in `cache_dir` when one is given (the cached copy when the source is unchanged or
    unreachable), else directly."""
    if storage.is_remote(model_uri):
        target = tempfile.mkdtemp(prefix="edgeservers-model-")
        atexit.register(_remove_in, os.getpid(), target)
        try:
            if cache_dir:
                provided = storage.provide(model_uri, target, cache_dir)
                log.log(logging.WARNING if provided.offline else logging.INFO, "model_uri: %s", provided.line())
            else:
                storage.download(model_uri, target)
        except storage.StorageError as e:
            raise ModelLoadError(f"cannot download model_uri: {e}") from None  # e names the URI, credentials removed
        return Path(target)
    path = Path(model_uri.removeprefix("file://"))
    if not path.exists():
        raise ModelLoadError(f"model_uri {model_uri}: no such file or directory")
    return path


def _remove_in(owner: int, directory: str) -> None:
    """Remove the start's download when the process that made it exits: a container restarted in place keeps
    its /tmp, and each start downloads again. Forked workers, which serve the same files, leave it."""
    if os.getpid() == owner:
        shutil.rmtree(directory, ignore_errors=True)


def model_provenance(model_dir: Path) -> dict[str, str]:
    """What the server reports about the model's origin: {model_version, model_source, model_fetched_at}
    from the manifest the storage initializer (or the server's own download) wrote in the model directory
    (or beside a model file); {} when there is none (a model copied there by hand)."""
    manifest = storage.provenance(str(model_dir))
    return manifest.describe() if manifest else {}


def find_model(path: Path, suffixes: Sequence[str]) -> Path:
    """The model file at `path`: the file itself, or the one file in the directory with the most preferred suffix.

    Suffixes are in order of preference (OpenVINO: IR, then ONNX, then TFLite). Two candidates of the
    same kind are an error: the server cannot guess which one the user meant.
    """
    if path.is_file():
        if path.suffix.lower() not in suffixes:
            raise ModelLoadError(f"model file {path} is not one of: {', '.join(suffixes)}")
        return _with_weights(path)
    found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in suffixes)
    for suffix in suffixes:
        candidates = [p for p in found if p.suffix.lower() == suffix]
        if len(candidates) == 1:
            return _with_weights(candidates[0])
        if len(candidates) > 1:
            listed = ", ".join(str(p.relative_to(path)) for p in candidates)
            raise ModelLoadError(
                f"model directory {path} holds several {suffix} models ({listed}); set model_uri to the one to serve"
            )
    present = ", ".join(sorted(p.name for p in path.iterdir())) or "nothing"
    raise ModelLoadError(f"model directory {path} has no {' / '.join(suffixes)} model; found: {present}")


def _with_weights(model: Path) -> Path:
    """An OpenVINO IR is two files: the .xml graph needs its .bin weights beside it."""
    if model.suffix.lower() == ".xml" and not model.with_suffix(".bin").is_file():
        raise ModelLoadError(f"OpenVINO IR {model} has no weights file {model.with_suffix('.bin').name} beside it")
    return model


def read_labels(model: Path, labels: str, names: str = "") -> list[str] | None:
    """Labels, one per line (line N = class N): the `labels` parameter, else labels.txt beside the model; or the
    labels themselves, comma-separated (`label_names`)."""
    if names:
        return [name.strip() for name in names.split(",")]
    if labels:
        path = Path(labels)
        if not path.is_absolute():
            path = model.parent / path if (model.parent / path).exists() else path
        if not path.is_file():
            raise ModelLoadError(
                f"labels file {labels} not found (looked beside the model and in the working directory)"
            )
    else:
        path = model.parent / LABELS_FILE
        if not path.is_file():
            return None
    lines = path.read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines]
