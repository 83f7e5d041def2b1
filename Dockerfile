# edgeservers server images, one file for every arch: `--platform` (TARGETARCH) picks the per-arch stages.
#   buildah bud --platform linux/arm64  --build-arg VERSION=0.1.0 -t edgeservers:0.1.0-arm64 .
#   buildah bud --platform linux/arm/v7 --build-arg VERSION=0.1.0 -t edgeservers:0.1.0-armv7 .
#   buildah bud --platform linux/arm64  --build-arg VERSION=0.1.0 --target openvino -t edgeservers:0.1.0-openvino-arm64 .
# Targets: the default (last stage) is the TFLite server (`edgeservers:VERSION`, MODEL_NAME=TFLiteServer);
# `--target openvino` is the same image plus one layer with OpenVINO (`edgeservers:VERSION-openvino`,
# MODEL_NAME=OpenVINOServer; amd64 and arm64 only: OpenVINO has no 32-bit ARM build).
# Dockerfile.amd64, Dockerfile.arm64v8 and Dockerfile.arm32v7 are links to this file.
# docs/images.md explains every choice; mk/images.mk (docker/images.sh) is the tested way to build.
#
#   TARGETARCH  amd64      arm64      arm (arm/v7)
#   Python      the base's the base's Debian's python3 (/usr/bin), numpy and PyYAML from Debian
#   packages    PyPI wheels (requirements.txt)  requirements-armv7.txt (no armv7 wheels for numpy, PyYAML)
#   cv2         compiled here by docker/build-opencv.sh for every arch (core, imgproc, imgcodecs)
ARG BASE_IMAGE=python:3.11-slim-bookworm
# The OpenCV compile stage runs on the build machine's own arch (any Debian bookworm image of it).
ARG BUILD_IMAGE=python:3.11-slim-bookworm
ARG TARGETARCH

# ---- cv2: a lean OpenCV for the target arch, compiled natively or cross on the build machine
FROM --platform=$BUILDPLATFORM ${BUILD_IMAGE} AS cv2
ARG TARGETARCH
# The opencv-python-headless release whose sdist is compiled (make images passes requirements.txt's pin).
ARG OPENCV_PYTHON_VERSION=4.11.0.86
# Only for builds behind a TLS-intercepting proxy: a CA bundle path mounted into RUN (never baked in).
ARG PIP_CERT=
COPY docker/build-opencv.sh /usr/local/bin/
RUN build-opencv.sh fetch "$OPENCV_PYTHON_VERSION" "$TARGETARCH"
RUN build-opencv.sh build "$OPENCV_PYTHON_VERSION" "$TARGETARCH" /out

# ---- the run-time base of each arch: tini, the user, and on arm/v7 Debian's python3 with numpy
FROM ${BASE_IMAGE} AS runtime-wheels
COPY docker/runtime.sh /tmp/runtime.sh
RUN bash /tmp/runtime.sh tini
FROM runtime-wheels AS runtime-amd64
FROM runtime-wheels AS runtime-arm64
FROM ${BASE_IMAGE} AS runtime-arm
COPY docker/runtime.sh /tmp/runtime.sh
RUN bash /tmp/runtime.sh tini python3 python3-numpy python3-yaml

# ---- the venv of each arch, trimmed in its build stage (removed bytes never reach the image)
FROM ${BASE_IMAGE} AS venv-wheels
ARG PIP_CERT=
COPY requirements.txt docker/trim-venv.sh /tmp/
# Everything in requirements.txt but OpenVINO (its own image, below) and OpenCV (the cv2 stage).
RUN set -eux; export DEBIAN_FRONTEND=noninteractive; \
    apt-get update; apt-get install -y --no-install-recommends binutils; \
    python3 -m venv /opt/venv; \
    grep -Ev '^(openvino|opencv-python-headless)[ =<>!~;]' /tmp/requirements.txt > /tmp/server.txt; \
    /opt/venv/bin/pip install --no-cache-dir --prefer-binary ${PIP_CERT:+--cert "$PIP_CERT"} -r /tmp/server.txt

FROM venv-wheels AS venv-amd64
ARG TRACING=0
RUN TRACING=$TRACING bash /tmp/trim-venv.sh /opt/venv
FROM venv-amd64 AS venv-arm64

FROM runtime-arm AS venv-arm
ARG PIP_CERT=
ARG TRACING=0
# e.g. https://www.piwheels.org/simple for prebuilt armv7 wheels (not needed; pure speed-up).
ARG EXTRA_INDEX_URL=
COPY requirements-armv7.txt docker/trim-venv.sh /tmp/
RUN set -eux; export DEBIAN_FRONTEND=noninteractive; \
    apt-get update; apt-get install -y --no-install-recommends python3-venv; \
    /usr/bin/python3 -m venv --system-site-packages /opt/venv; \
    TORNADO_EXTENSION=0 /opt/venv/bin/pip install --no-cache-dir --no-deps --prefer-binary \
        ${PIP_CERT:+--cert "$PIP_CERT"} ${EXTRA_INDEX_URL:+--extra-index-url "$EXTRA_INDEX_URL"} -r /tmp/requirements-armv7.txt; \
    TRACING=$TRACING bash /tmp/trim-venv.sh /opt/venv

FROM venv-${TARGETARCH} AS venv

# ---- OpenVINO and whatever it adds to the venv, alone in one directory (amd64, arm64)
FROM venv-wheels AS openvino-site
ARG PIP_CERT=
COPY docker/openvino-site.sh /tmp/
RUN bash /tmp/openvino-site.sh /opt/venv /tmp/requirements.txt /opt/openvino-site

# ---- the TFLite server's files on the full Debian root, then only what it runs copied out of it
FROM runtime-${TARGETARCH} AS server-root
COPY --from=venv /opt/venv /opt/venv
COPY --from=cv2 /out/site-packages/ /opt/venv/lib/python3.11/site-packages/
COPY --from=cv2 /out/licenses/ /usr/share/licenses/opencv/
WORKDIR /opt/edgeservers
COPY docker/entrypoint.sh docker/entrypoint.sh
COPY edgeservers edgeservers
COPY TFLiteServer.py OpenVINOServer.py ./
# Bad parameter values stop seldon-core-microservice with one line (edgeservers/parameter_check.py).
COPY edgeservers/parameter_check.pth /opt/venv/lib/python3.11/site-packages/edgeservers-parameter-check.pth
COPY docker/slim_root.py /usr/local/lib/slim_root.py
RUN set -eux; /opt/venv/bin/python -m compileall -q edgeservers TFLiteServer.py OpenVINOServer.py; \
    python3 /usr/local/lib/slim_root.py /out /opt/venv /opt/edgeservers /usr/bin/tini /bin/sh /mnt/models

# ---- the TFLite server (the default target): one layer, no apt, dpkg, perl or coreutils
FROM scratch AS server
ARG VERSION=
ARG SOURCE_URL=
COPY --from=server-root /out/ /
ENV PATH=/opt/venv/bin:/usr/bin \
    LANG=C.UTF-8 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    MODEL_NAME=TFLiteServer \
    SERVICE_TYPE=MODEL \
    PREDICTIVE_UNIT_HTTP_SERVICE_PORT=9000 \
    PREDICTIVE_UNIT_GRPC_SERVICE_PORT=5000 \
    PREDICTIVE_UNIT_METRICS_SERVICE_PORT=6000
WORKDIR /opt/edgeservers
LABEL org.opencontainers.image.title="edgeservers" \
      org.opencontainers.image.description="Seldon Core v1 TFLite model server for edge nodes" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.source="${SOURCE_URL}" \
      org.opencontainers.image.licenses="Apache-2.0"
EXPOSE 9000 5000 6000
USER 8888
ENTRYPOINT ["/usr/bin/tini", "-g", "--", "/opt/edgeservers/docker/entrypoint.sh"]

# ---- `--target openvino`: the server plus one layer with OpenVINO, OpenVINOServer by default
FROM server AS openvino
COPY --from=openvino-site /opt/openvino-site/ /opt/venv/lib/python3.11/site-packages/
# The root holds only the TFLite server's libraries: fail the build if OpenVINO's CPU plugin needs more.
RUN python -c "import openvino as ov; print('OpenVINO', ov.get_version(), ov.Core().get_versions('CPU'))"
ENV MODEL_NAME=OpenVINOServer
LABEL org.opencontainers.image.description="Seldon Core v1 OpenVINO model server for edge nodes"

# ---- the default target
FROM server
