#!/bin/bash
# The run-time base of the server images (run as root in one RUN step, so that nothing it deletes
# was ever written to an earlier layer): Debian PACKAGES (tini at least), the non-root user, and no
# apt lists, package caches, .deb files, logs or test suites left behind.
#   usage: runtime.sh PACKAGE...
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
missing=
for p in "$@"; do
	[ "$(dpkg-query -W -f '${Status}' "$p" 2>/dev/null || true)" = "install ok installed" ] || missing="$missing $p"
done
if [ -n "$missing" ]; then
	apt-get update
	# shellcheck disable=SC2086
	apt-get install -y --no-install-recommends $missing
fi
# Debian's python3-numpy ships its test suite (15 MB on armhf); nothing runs it.
rm -rf /usr/lib/python3/dist-packages/numpy/*/tests /usr/lib/python3/dist-packages/numpy/tests
# uid 8888 is the one Seldon Core's own images run as; gid 0 for OpenShift's arbitrary uids.
getent passwd seldon >/dev/null || useradd --uid 8888 --gid 0 --no-create-home --home-dir /tmp --shell /usr/sbin/nologin seldon
mkdir -p /mnt/models
chown 8888:0 /mnt/models
chmod 0775 /mnt/models
apt-get clean
rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/cache/apt/archives/*.deb /var/cache/debconf/*-old \
	/var/log/apt /var/log/dpkg.log /root/.cache /tmp/*
