#!/bin/bash
# Build a local stand-in for python:3.11-slim-bookworm when Docker Hub is out of reach:
# a Debian bookworm minbase root file system (Debian's python3 3.11 + venv + CA certificates)
# made with debootstrap (foreign arches run under qemu-user-static via binfmt_misc),
# trimmed and imported into podman's storage as IMAGE.
#   usage: docker/make-base.sh amd64|arm64|armhf IMAGE [MIRROR]
# Reruns are free while IMAGE exists (remove it with `podman rmi IMAGE` to rebuild).
set -euo pipefail
arch=$1
image=$2
mirror=${3:-http://deb.debian.org/debian}
cache=${CACHE_DIR:-.cache}/base/$arch

if podman image exists "$image"; then
	echo "base $image: already built"
	exit 0
fi
case $arch in
	amd64) pa="--arch amd64" ;;
	arm64) pa="--arch arm64 --variant v8" ;;
	armhf) pa="--arch arm --variant v7" ;;
	*) echo "unknown arch $arch" >&2; exit 2 ;;
esac

if [ ! -f "$cache/rootfs.tar" ]; then
	root=$cache/rootfs
	rm -rf "$root"
	mkdir -p "$root"
	start=$(date +%s)
	debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
		--arch="$arch" bookworm "$root" "$mirror"
	cat > "$root/etc/apt/sources.list" <<SRC
deb $mirror bookworm main
deb $mirror bookworm-updates main
deb http://deb.debian.org/debian-security bookworm-security main
SRC
	# A mirror whose security index for this arch is stale (seen behind caching proxies) would
	# make every `apt-get update` in the images fail: keep the line only if it updates here.
	if ! chroot "$root" apt-get update >/dev/null 2>&1; then
		echo "WARNING: apt-get update fails in the $arch base; dropping bookworm-security from its sources" >&2
		sed -i '/debian-security/d' "$root/etc/apt/sources.list"
		chroot "$root" apt-get update >/dev/null
	fi
	# Like the slim images: no apt lists or caches, docs, man pages or locales.
	rm -rf "$root"/var/cache/apt/* "$root"/var/lib/apt/lists/* "$root"/var/log/* \
		"$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/* \
		"$root"/usr/share/locale/* "$root"/tmp/* "$root"/debootstrap
	mkdir -p "$root/var/lib/apt/lists/partial"
	tar --numeric-owner -C "$root" -cf "$cache/rootfs.tar.tmp" .
	mv "$cache/rootfs.tar.tmp" "$cache/rootfs.tar"
	rm -rf "$root"
	echo "base $arch: debootstrap took $(( $(date +%s) - start )) s"
fi
# shellcheck disable=SC2086
podman import --os linux $pa \
	--change 'ENV LANG=C.UTF-8' --change 'CMD ["python3"]' \
	"$cache/rootfs.tar" "$image"
echo "base $image: imported"
