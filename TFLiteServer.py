"""Seldon Core prepackaged server for TensorFlow Lite models.

Run by Seldon's wrapper: `seldon-core-microservice TFLiteServer --service-type MODEL`, with the
parameters (model_uri, ...) in PREDICTIVE_UNIT_PARAMETERS. docs/parameters.md lists every parameter.
"""

from edgeservers.runtimes.tflite import TFLiteRuntime
from edgeservers.seldon.component import EdgeModelServer


class TFLiteServer(EdgeModelServer):
    """A .tflite model on LiteRT (ai_edge_litert), or tflite_runtime on armv7."""

    runtime_class = TFLiteRuntime
