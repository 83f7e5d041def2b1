#!/bin/sh
# Shared last steps of the three server images (run as root in the final stage):
# tini, the non-root user, no apt lists, no byte-code the read-only root can't update anyway.
set -eu
export DEBIAN_FRONTEND=noninteractive
if ! command -v tini >/dev/null; then
	apt-get update
	apt-get install -y --no-install-recommends tini
fi
# uid 8888 is the one Seldon Core's own images run as; gid 0 for OpenShift's arbitrary uids.
getent passwd seldon >/dev/null || useradd --uid 8888 --gid 0 --no-create-home --home-dir /tmp --shell /usr/sbin/nologin seldon
mkdir -p /mnt/models
chown 8888:0 /mnt/models
chmod 0775 /mnt/models
rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/log/apt /var/log/dpkg.log /root/.cache /tmp/*
