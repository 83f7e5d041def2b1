"""Fetch a model into a local directory: the storage initializer of the edge servers.

    python -m edgeservers.storage <model_uri> <dest_dir> [--sha256 HEX] [--cache-dir DIR] [--max-download SIZE]
        [--max-unpacked SIZE] [--max-files N] [--stall-timeout SECONDS] [--connect-timeout SECONDS] [--cache-max SIZE]
    python -m edgeservers.storage --cache-dir DIR --prepare-cache UID:GID

is the ENTRYPOINT of the storage-initializer image (Seldon's operator runs it as the init container
with `<model_uri> /mnt/models`); the model servers call `download(uri, dest_dir)` from load() when
`is_remote(model_uri)`, under the same limits (from the environment), or `provide(uri, dir, cache_dir)`
with a node-local model cache (`cache`: verified copies, a cheap check of the source, the cached copy
when it is unreachable, resumable downloads); `provenance(dir)` reads what a model directory holds.

One module per scheme: `local` (file:// and paths), `http` (http://, https://; urllib3), `s3` (s3://;
boto3); `archive` unpacks a single fetched .zip/.tar/.tar.gz/.tgz; `partial` keeps what a download has
received so far; `cache` is the model cache; `cli` is the command line. gs:// is
refused with a pointer to GCS's S3-compatible XML API. The rules (staging directory, nothing outside
dest, limits, retries, checksums, no credentials in messages) are in storage-initializer/README.md.

Only the standard library is imported here: a scheme's module, and boto3 or urllib3 with it, is
imported when a URI of that scheme is fetched, so the package stays light in the servers and runs in
the small storage-initializer image.
"""

from .cache import Manifest, ModelCache, Provided, provenance, provide
from .cli import main
from .common import CHANGED, UNCHANGED, UNREACHABLE, Check, Limits, StorageError
from .core import PARTIAL_PREFIX, download, is_remote

__all__ = [
    "CHANGED",
    "PARTIAL_PREFIX",
    "UNCHANGED",
    "UNREACHABLE",
    "Check",
    "Limits",
    "Manifest",
    "ModelCache",
    "Provided",
    "StorageError",
    "download",
    "is_remote",
    "main",
    "provenance",
    "provide",
]
