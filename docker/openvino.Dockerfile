# The `<version>-openvino` tag: the same image with OpenVINOServer as the default class (Seldon's
# operator sets only image:tag per prepackaged server). A config-only change: no new layer.
ARG IMAGE=edgeservers:0.1.0
FROM ${IMAGE}
ENV MODEL_NAME=OpenVINOServer
