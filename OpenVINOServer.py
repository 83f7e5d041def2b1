"""Seldon Core prepackaged server for OpenVINO models (IR .xml/.bin, ONNX, or .tflite).

Run by Seldon's wrapper: `seldon-core-microservice OpenVINOServer --service-type MODEL`, with the
parameters (model_uri, device, performance_hint, ...) in PREDICTIVE_UNIT_PARAMETERS.
"""

from edgeservers.runtimes.openvino import OpenVINORuntime
from edgeservers.seldon.component import EdgeModelServer


class OpenVINOServer(EdgeModelServer):
    """A model compiled by OpenVINO for one device (CPU by default), with a pool of infer requests."""

    runtime_class = OpenVINORuntime
