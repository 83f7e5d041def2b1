#!/bin/sh
# Builds the edgeservers images with buildah/podman (mk/images.mk calls this; docs/images.md explains).
#   docker/images.sh base ARCH...      local Debian bookworm bases (only when BASE_IMAGE=local)
#   docker/images.sh build ARCH...     server, server-openvino (amd64, arm64) and initializer, per arch
#   docker/images.sh manifest ARCH...  manifest lists REPO:VERSION, REPO:VERSION-openvino, INIT_REPO:VERSION
#   docker/images.sh export FILE       the manifest lists into one OCI archive (an OCI layout, tarred)
#   docker/images.sh push REGISTRY     the manifest lists, all arches, to REGISTRY
# ARCH: amd64, arm64, armv7. Environment (defaults from mk/images.mk): VERSION, REPO, INIT_REPO,
# BASE_IMAGE (python:3.11-slim-bookworm, or "local" for bases made here by debootstrap), PIP_CA (a CA
# bundle to mount into RUN steps for pip behind a TLS-intercepting proxy), SOURCE_URL.
set -eu
: "${VERSION:?}" "${REPO:=localhost/edgeservers}" "${INIT_REPO:=localhost/edgeservers-storage-initializer}"
: "${BASE_IMAGE:=python:3.11-slim-bookworm}" "${PIP_CA:=}" "${SOURCE_URL:=}"
LOCAL_BASE=localhost/edgeservers-base:bookworm
export CONTAINERS_CONF="${CONTAINERS_CONF:-$(pwd)/.cache/containers.conf}"
[ -f "$CONTAINERS_CONF" ] || { mkdir -p "$(dirname "$CONTAINERS_CONF")"; printf '[containers]\ndefault_ulimits = []\n' > "$CONTAINERS_CONF"; }

platform() { case $1 in amd64) echo linux/amd64 ;; arm64) echo linux/arm64 ;; armv7) echo linux/arm/v7 ;; *) echo "unknown arch $1" >&2; exit 2 ;; esac; }
debarch() { case $1 in amd64) echo amd64 ;; arm64) echo arm64 ;; armv7) echo armhf ;; esac; }
dockerfile() { case $1 in amd64) echo Dockerfile.amd64 ;; arm64) echo Dockerfile.arm64v8 ;; armv7) echo Dockerfile.arm32v7 ;; esac; }
host_arch() { case $(uname -m) in x86_64) echo amd64 ;; aarch64) echo arm64 ;; armv7l) echo armv7 ;; esac; }
base_of() { if [ "$BASE_IMAGE" = local ]; then echo "$LOCAL_BASE-$(debarch "$1")"; else echo "$BASE_IMAGE"; fi; }
now() { date +%s; }

bud() { # ARCH DOCKERFILE TAG [more buildah args]
	arch=$1 file=$2 tag=$3
	shift 3
	set -- --isolation chroot --layers --platform "$(platform "$arch")" \
		--build-arg VERSION="$VERSION" --build-arg SOURCE_URL="$SOURCE_URL" \
		--build-arg BASE_IMAGE="$(base_of "$arch")" -f "$file" -t "$tag" "$@"
	[ "$BASE_IMAGE" = local ] && set -- --pull=never "$@"
	if [ -n "$PIP_CA" ]; then
		set -- -v "$PIP_CA:/etc/ssl/host-ca.crt:ro" --build-arg PIP_CERT=/etc/ssl/host-ca.crt "$@"
	fi
	buildah bud "$@" .
}

cmd=$1
shift
case $cmd in
base)
	for a in "$@" $(host_arch); do
		docker/make-base.sh "$(debarch "$a")" "$LOCAL_BASE-$(debarch "$a")"
	done
	;;
build)
	for a in "$@"; do
		t0=$(now)
		extra=
		if [ "$a" = armv7 ]; then
			# buildah ignores FROM --platform=$BUILDPLATFORM: give the cross-compile stage the
			# build machine's image by ID (an ID is taken whatever its platform).
			b=$(base_of "$(host_arch)")
			[ "$BASE_IMAGE" = local ] || podman pull --arch "$(host_arch)" "$b" >/dev/null
			extra="--build-arg BUILD_IMAGE=$(podman image inspect --format '{{.Id}}' "$b")"
		fi
		# shellcheck disable=SC2086
		bud "$a" "$(dockerfile "$a")" "$REPO:$VERSION-$a" $extra
		t1=$(now)
		echo "images: $REPO:$VERSION-$a built in $((t1 - t0)) s"
		if [ "$a" != armv7 ]; then
			buildah bud --isolation chroot --pull=never --platform "$(platform "$a")" \
				--build-arg IMAGE="$REPO:$VERSION-$a" -f docker/openvino.Dockerfile -t "$REPO:$VERSION-openvino-$a" .
		fi
		t2=$(now)
		bud "$a" storage-initializer/Dockerfile "$INIT_REPO:$VERSION-$a"
		echo "images: $INIT_REPO:$VERSION-$a built in $(($(now) - t2)) s"
	done
	;;
manifest)
	for list in "$REPO:$VERSION" "$REPO:$VERSION-openvino" "$INIT_REPO:$VERSION"; do
		buildah manifest rm "$list" >/dev/null 2>&1 || true
		buildah manifest create "$list" >/dev/null
		for a in "$@"; do
			case $list in
			"$REPO:$VERSION") img=$REPO:$VERSION-$a ;;
			"$REPO:$VERSION-openvino") [ "$a" = armv7 ] && continue; img=$REPO:$VERSION-openvino-$a ;;
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
	echo "usage: $0 base|build|manifest|export|push ..." >&2
	exit 2
	;;
esac
