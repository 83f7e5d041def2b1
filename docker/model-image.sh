#!/bin/bash
# A model as an OCI image (mk/images.mk: `make model-image MODEL=dir IMAGE=ref`): FROM scratch, the model
# directory's files at the image's root and nothing else, plus the manifest edgeservers.storage writes
# (sha256 of every file, origin "image"), so the server reports the model's version from it. A
# Kubernetes image volume mounts the image read-only at /mnt/models (charts/kserve/face-mask-model-image.yaml).
# The image has no platform of its own to run: one image serves amd64, arm64 and arm/v7 nodes.
set -euo pipefail
model=${1:?usage: docker/model-image.sh MODEL_DIR IMAGE} image=${2:?usage: docker/model-image.sh MODEL_DIR IMAGE}
[ -d "$model" ] || { echo "model-image: $model is not a directory" >&2; exit 2; }
python=${PYTHON:-python3}
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
cp -R "$model"/. "$stage"/
chmod -R a+rX,go-w "$stage"
version=$("$python" -c '
import os, sys
from edgeservers.storage.cache import IMAGE, MANIFEST, Manifest
from edgeservers.storage.common import Source
manifest = Manifest.of_tree(sys.argv[1], sys.argv[2], Source(), origin=IMAGE)
manifest.write(os.path.join(sys.argv[1], MANIFEST))
os.chmod(os.path.join(sys.argv[1], MANIFEST), 0o644)
print(manifest.version)' "$stage" "$image")
ctr=$(buildah from scratch)
buildah copy --quiet --chown 0:0 "$ctr" "$stage" / >/dev/null
buildah config --label org.opencontainers.image.title="edgeservers model $(basename "$model")" \
	--label org.opencontainers.image.version="$version" --label io.edgeservers.model.version="$version" "$ctr"
buildah commit --quiet --rm "$ctr" "$image" >/dev/null
echo "model-image: $image holds $(find "$stage" -type f | wc -l) files of $model, version $version"
