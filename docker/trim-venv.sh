#!/bin/bash
# Remove from a venv what the images never load; docs/images.md gives what each step saves and why
# it is safe (make image-test still classifies the test photo on every arch afterwards).
#   usage: trim-venv.sh VENV
# TRACING=1 in the environment keeps Seldon's tracing packages (for images run with TRACING=1).
set -euo pipefail
venv=$1
site=$venv/lib/python3.11/site-packages
py=$venv/bin/python

if [ -x "$venv/bin/pip" ]; then
	# seldon-core 1.17.1 declares cryptography but never imports it (17 MB with cffi, pycparser).
	"$py" -m pip uninstall -y -q cryptography cffi pycparser 2>/dev/null || true
	# Seldon's tracing stack: seldon_core imports it only when tracing is on (TRACING=1 / --tracing:
	# microservice.py, gunicorn_utils.py, utils.setup_tracing). tornado stays (the HTTP worker uses it).
	if [ "${TRACING:-0}" != 1 ]; then
		"$py" -m pip uninstall -y -q jaeger-client opentracing threadloop thrift Flask-OpenTracing grpcio-opentracing
	fi
	# No installs at run time: pip goes too (16 MB).
	"$py" -m pip uninstall -y -q pip
fi

# Test suites: numpy's (about 15 MB) and setuptools' (1.5 MB). setuptools itself stays: gunicorn
# 20.1 imports pkg_resources at start, and seldon_core imports distutils, which setuptools provides
# where Python has none of its own (Debian's python3 without python3-distutils).
find "$site" -type d -name tests \( -path '*/numpy/*' -o -path '*/setuptools/*' \) -prune -exec rm -rf {} +
rm -f "$site"/setuptools/*.exe

# botocore's API models for every AWS service (about 25 MB): only S3 and the credential
# providers' services (STS for web identity/assume-role, SSO) are ever called.
if [ -d "$site/botocore/data" ]; then
	for d in "$site"/botocore/data/*/; do
		case $(basename "$d") in s3 | sts | sso | sso-oidc) ;; *) rm -rf "$d" ;; esac
	done
fi

# LiteRT's WebGPU accelerator (16 MB): loaded only for GPU delegation, and the image has no GPU
# runtime (no Vulkan/WebGPU driver), so it could never run here; the CPU interpreter doesn't need it.
rm -f "$site"/ai_edge_litert/libLiteRtWebGpuAccelerator.so

# OpenVINO: the Intel GPU and NPU plugins (and the GPU's kernel cache) need drivers and runtimes
# the image doesn't carry (OpenCL ICD, Level Zero), so they could never load here (about 60 MB);
# the PyTorch, Paddle, JAX and GGUF front ends convert in-memory framework models the servers
# never get (about 9 MB). CPU, AUTO/HETERO/BATCH and the IR, ONNX, TF and TFLite readers stay.
if [ -d "$site/openvino/libs" ]; then
	rm -f "$site"/openvino/libs/libopenvino_intel_gpu_plugin.so \
		"$site"/openvino/libs/libopenvino_intel_npu_plugin.so \
		"$site"/openvino/libs/cache.json \
		"$site"/openvino/libs/libopenvino_pytorch_frontend.so* \
		"$site"/openvino/libs/libopenvino_paddle_frontend.so* \
		"$site"/openvino/libs/libopenvino_jax_frontend.so* \
		"$site"/openvino/libs/libopenvino_gguf_frontend.so*
fi

# Symbol tables of extension modules that ship unstripped (ml_dtypes alone: 24 MB -> 1.5 MB).
# Only modules that auditwheel did not patch (patchelf-edited files must not be stripped).
if command -v strip >/dev/null; then
	for f in "$site"/ml_dtypes/*.so "$site"/ai_edge_litert/*.so; do
		[ -f "$f" ] && strip --strip-unneeded "$f"
	done
fi
find "$venv" -name '*.pyc' -path '*/tests/*' -delete 2>/dev/null || true
rm -rf /root/.cache
