"""Shared logic of the edgeservers model servers (TFLiteServer, OpenVINOServer).

A request travels one way: payload (codecs) -> tensors (images) -> runtime -> outputs
(postprocess) -> response (codecs). The runtimes live behind `runtime.ModelRuntime`.
"""

__version__ = "0.1.0"
