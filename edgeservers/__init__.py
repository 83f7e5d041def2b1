"""Shared logic of the edgeservers model servers (TFLiteServer, OpenVINOServer).

A request travels one way: payload (codecs) -> tensors (images) -> runtime -> outputs
(postprocess) -> response (codecs). The runtimes live behind `runtime.ModelRuntime`.
"""

import os

__version__ = "0.1.0"

# OpenCV reads its own cap on decoded pixels once, when cv2 is imported: set it before any module here
# imports cv2, to the default max_image_pixels, unless the environment sets it (see images.py).
OPENCV_MAX_PIXELS_DEFAULT = 40_000_000
os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(OPENCV_MAX_PIXELS_DEFAULT))
