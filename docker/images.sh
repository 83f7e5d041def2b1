#!/bin/bash
# Builds the edgeservers images with buildah/podman (mk/images.mk calls this; docs/images.md explains).
#   docker/images.sh base ARCH...      local Debian bookworm bases (only when BASE_IMAGE=local)
#   docker/images.sh build ARCH...     server, server-openvino (amd64, arm64) and initializer, per arch
#   docker/images.sh test ARCH...      docker/image_test.py on the built images (arm ones under qemu)
#   docker/images.sh sizes ARCH...     each image's size, uncompressed and compressed (gzip layers, as pulled)
#   docker/images.sh manifest ARCH...  manifest lists REPO:VERSION, REPO:VERSION-openvino, INIT_REPO:VERSION
#   docker/images.sh export FILE       the manifest lists into one OCI archive (an OCI layout, tarred)
#   docker/images.sh push REGISTRY     the manifest lists, all arches, to REGISTRY
# ARCH: amd64, arm64, armv7. Environment (defaults from mk/images.mk): VERSION, REPO, INIT_REPO,
# BASE_IMAGE (python:3.11-slim-bookworm, or "local" for bases made here by debootstrap), PIP_CA (a CA
# bundle to mount into RUN steps for pip behind a TLS-intercepting proxy), SOURCE_URL.
set -euo pipefail
: "${VERSION:?}" "${REPO:=localhost/edgeservers}" "${INIT_REPO:=localhost/edgeservers-storage-initializer}"
: "${BASE_IMAGE:=python:3.11-slim-bookworm}" "${PIP_CA:=}" "${SOURCE_URL:=}"
LOCAL_BASE=localhost/edgeservers-base:bookworm
export CONTAINERS_CONF="${CONTAINERS_CONF:-$(pwd)/.cache/containers.conf}"
[ -f "$CONTAINERS_CONF" ] || { mkdir -p "$(dirname "$CONTAINERS_CONF")"; printf '[containers]\ndefault_ulimits = []\n' > "$CONTAINERS_CONF"; }

# The one arch map: our name -> OCI platform, Debian arch, whether an OpenVINO image exists.
arch_info() {
	case $1 in
	amd64) echo "linux/amd64 amd64 openvino" ;;
	arm64) echo "linux/arm64 arm64 openvino" ;;
	armv7) echo "linux/arm/v7 armhf -" ;;
	*) echo "unknown arch $1 (amd64, arm64, armv7)" >&2; exit 2 ;;
	esac
}
platform() { local i; i=$(arch_info "$1"); set -- $i; echo "$1"; }
debarch() { local i; i=$(arch_info "$1"); set -- $i; echo "$2"; }
has_openvino() { local i; i=$(arch_info "$1"); set -- $i; [ "$3" = openvino ]; }
host_arch() { local a; for a in amd64 arm64 armv7; do if [ "$(debarch $a)" = "$(dpkg --print-architecture)" ]; then echo $a; fi; done; }
base_of() { if [ "$BASE_IMAGE" = local ]; then echo "$LOCAL_BASE-$(debarch "$1")"; else echo "$BASE_IMAGE"; fi; }
images_of() { # ARCH: every image built for it
	echo "$REPO:$VERSION-$1"
	if has_openvino "$1"; then echo "$REPO:$VERSION-openvino-$1"; fi
	echo "$INIT_REPO:$VERSION-$1"
}
now() { date +%s; }

bud() { # ARCH DOCKERFILE TAG [more buildah args]
	arch=$1 file=$2 tag=$3
	shift 3
	t0=$(now)
	set -- --isolation chroot --layers --jobs "${BUILD_JOBS:-2}" --platform "$(platform "$arch")" \
		--build-arg VERSION="$VERSION" --build-arg SOURCE_URL="$SOURCE_URL" \
		--build-arg BASE_IMAGE="$(base_of "$arch")" -f "$file" -t "$tag" "$@"
	[ "$BASE_IMAGE" = local ] && set -- --pull=never "$@"
	if [ -n "$PIP_CA" ]; then
		set -- -v "$PIP_CA:/etc/ssl/host-ca.crt:ro" --build-arg PIP_CERT=/etc/ssl/host-ca.crt "$@"
	fi
	buildah bud "$@" .
	echo "images: $tag built in $(($(now) - t0)) s"
}

cmd=$1
shift
case $cmd in
base)
	for a in $(printf '%s\n' "$@" "$(host_arch)" | sort -u); do
		docker/make-base.sh "$(debarch "$a")" "$LOCAL_BASE-$(debarch "$a")"
	done
	;;
build)
	# The OpenCV compile stage runs on the build machine's arch: buildah ignores
	# FROM --platform=$BUILDPLATFORM, so it gets the build machine's image by ID (an ID is taken
	# whatever its platform). The OpenCV version is requirements.txt's pin.
	b=$(base_of "$(host_arch)")
	[ "$BASE_IMAGE" = local ] || podman pull --arch "$(debarch "$(host_arch)")" "$b" >/dev/null
	opencv=$(sed -n 's/^opencv-python-headless==\([^ ;]*\).*/\1/p' requirements.txt)
	common="--build-arg BUILD_IMAGE=$(podman image inspect --format '{{.Id}}' "$b") --build-arg OPENCV_PYTHON_VERSION=$opencv"
	for a in "$@"; do
		# shellcheck disable=SC2086
		bud "$a" Dockerfile "$REPO:$VERSION-$a" $common
		if has_openvino "$a"; then
			# shellcheck disable=SC2086
			bud "$a" Dockerfile "$REPO:$VERSION-openvino-$a" $common --target openvino
		fi
		bud "$a" storage-initializer/Dockerfile "$INIT_REPO:$VERSION-$a"
	done
	;;
test)
	ov=
	for a in "$@"; do if has_openvino "$a"; then ov="$ov $a"; fi; done
	# shellcheck disable=SC2086
	PYTHONPATH="$(pwd)" python3 docker/image_test.py --version "$VERSION" --repo "$REPO" --init-repo "$INIT_REPO" \
		--host-arch "$(host_arch)" --openvino-arches="${ov# }" "$@"
	;;
sizes)
	# Uncompressed: podman's size of the image. Compressed: the gzip'd layers a pull downloads
	# (skopeo copies the image into an OCI layout, compressing each layer as a push does).
	# Also written to bench/results/images.json, which `make bench` and bench.report put in docs/benchmarks.md.
	tmp=$(mktemp -d)
	trap 'rm -rf "$tmp"' EXIT
	printf '%-58s %12s %12s\n' image uncompressed compressed
	for a in "$@"; do
		for img in $(images_of "$a"); do
			podman image exists "$img" || { printf '%-58s %12s\n' "$img" "not built"; continue; }
			size=$(podman image inspect --format '{{.Size}}' "$img")
			rm -rf "$tmp/oci"
			skopeo copy -q "containers-storage:$img" "oci:$tmp/oci:x" >/dev/null
			manifest=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["manifests"][0]["digest"].split(":")[1])' "$tmp/oci/index.json")
			gz=$(python3 -c 'import json,sys; print(sum(l["size"] for l in json.load(open(sys.argv[1]))["layers"]))' "$tmp/oci/blobs/sha256/$manifest")
			printf '%-58s %9s MB %9s MB\n' "$img" $((size / 1000000)) $((gz / 1000000))
			printf '%s\t%s\t%s\t%s\n' "${img%-"$a"}" "$a" $((size / 1000000)) $((gz / 1000000)) >> "$tmp/sizes.tsv"
		done
	done
	[ -s "$tmp/sizes.tsv" ] || exit 0
	python3 - "$tmp/sizes.tsv" bench/results/images.json "$(git rev-parse --short HEAD 2>/dev/null || echo unknown)" <<'PY'
import datetime, json, sys
rows = [line.rstrip("\n").split("\t") for line in open(sys.argv[1])]
images = [{"image": r[0].split("/")[-1], "arch": r[1], "uncompressed_mb": int(r[2]), "compressed_mb": int(r[3])} for r in rows]
try:
    before = {r["arch"] for r in json.load(open(sys.argv[2]))["images"]}
except (OSError, ValueError, KeyError):
    before = set()
missing = sorted(before - {r["arch"] for r in images})
if missing:  # one date and commit for the whole table: a partial run does not replace the other arches' rows
    print(f"images: {sys.argv[2]} left as it was (it also holds {', '.join(missing)}; measure every arch to replace it)")
    sys.exit(0)
out = {"date": datetime.date.today().isoformat(), "commit": sys.argv[3], "images": images}
open(sys.argv[2], "w").write(json.dumps(out, indent=1) + "\n")
print(f"images: sizes written to {sys.argv[2]}")
PY
	;;
manifest)
	for list in "$REPO:$VERSION" "$REPO:$VERSION-openvino" "$INIT_REPO:$VERSION"; do
		buildah manifest rm "$list" >/dev/null 2>&1 || true
		buildah manifest create "$list" >/dev/null
		for a in "$@"; do
			case $list in
			"$REPO:$VERSION") img=$REPO:$VERSION-$a ;;
			"$REPO:$VERSION-openvino") has_openvino "$a" || continue; img=$REPO:$VERSION-openvino-$a ;;
			*) img=$INIT_REPO:$VERSION-$a ;;
			esac
			buildah manifest add "$list" "containers-storage:$img" >/dev/null
		done
		echo "images: manifest list $list: $*"
	done
	;;
export)
	out=$1
	layout=$out.layout
	rm -rf "$layout" "$out"
	for list in "$REPO:$VERSION" "$REPO:$VERSION-openvino" "$INIT_REPO:$VERSION"; do
		name=${list##*/}
		buildah manifest push --all "$list" "oci:$layout:$name"
	done
	tar -C "$layout" -cf "$out" .
	rm -rf "$layout"
	echo "images: $out ($(du -h "$out" | cut -f1)); tags: ${REPO##*/}:$VERSION ${REPO##*/}:$VERSION-openvino ${INIT_REPO##*/}:$VERSION"
	;;
push)
	registry=$1
	for list in "$REPO:$VERSION" "$REPO:$VERSION-openvino" "$INIT_REPO:$VERSION"; do
		buildah manifest push --all "$list" "docker://$registry/${list##*/}"
	done
	;;
*)
	echo "usage: $0 base|build|test|sizes|manifest|export|push ..." >&2
	exit 2
	;;
esac
