#!/bin/bash
# The OpenVINO image's one extra layer: install the openvino lines of requirements.txt into a copy of
# the server's venv, trim it, and move only what the install added (openvino, openvino-telemetry,
# their dist-info) to OUT_DIR, which the openvino stage copies over the server's site-packages.
#   usage: openvino-site.sh VENV REQUIREMENTS OUT_DIR
set -euo pipefail
venv=$1
requirements=$2
out=$3
site=$venv/lib/python3.11/site-packages
ls "$site" | sort > /tmp/site.before
grep -E '^openvino[ =<>!~;]' "$requirements" > /tmp/openvino.txt
"$venv/bin/pip" install --no-cache-dir --prefer-binary ${PIP_CERT:+--cert "$PIP_CERT"} -r /tmp/openvino.txt
ls "$site" | sort > /tmp/site.after
# Nothing the server's venv has may change (an upgraded numpy would hide under the server's copy).
changed=$(comm -23 /tmp/site.before /tmp/site.after)
if [ -n "$changed" ]; then
	echo "openvino-site.sh: installing OpenVINO replaced $changed in the server venv" >&2
	exit 1
fi
bash "$(dirname "$0")/trim-venv.sh" "$venv"
mkdir -p "$out"
comm -13 /tmp/site.before /tmp/site.after | while read -r entry; do
	mv "$site/$entry" "$out/"
done
ls "$out"
du -sh "$out"
