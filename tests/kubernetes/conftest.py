"""Kubernetes-tier fixtures: the local web server holding the models the charts' examples fetch."""

from __future__ import annotations

import pytest

from tests.support.paths import FACE_MASK, MOBILENET_V2
from tests.support.services import FileServer, tar_dir


@pytest.fixture(scope="module")
def model_site(web: FileServer) -> FileServer:
    """The local HTTP server on 127.0.0.1 with the demo classifier as an archive with its labels, and
    the face-mask detector as a bare .tflite (as on GitHub; tests/kubernetes/test_kserve.py fetches it)."""
    web.files["mobilenet_v2_quant.tar.gz"] = tar_dir(MOBILENET_V2)
    web.files["face_mask_detection.tflite"] = (FACE_MASK / "face_mask_detection.tflite").read_bytes()
    return web
