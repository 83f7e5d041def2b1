"""model_uri pointing at S3 (a real S3 API: moto in server mode) and at https/http (a local server):
the server fetches the model at start and answers with it."""

from __future__ import annotations

import functools
import http.server
import tarfile
import threading

import boto3
import pytest
from moto.server import ThreadedMotoServer

from conftest import MOBILENET_V2, free_port


@pytest.fixture(scope="module")
def s3_endpoint():
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture(scope="module")
def http_dir(tmp_path_factory):
    """A plain HTTP server on loopback serving a temp directory."""
    root = tmp_path_factory.mktemp("www")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1"}


def test_model_from_an_s3_prefix(start_server, s3_endpoint):
    s3 = boto3.client("s3", endpoint_url=s3_endpoint, **{k.lower(): v for k, v in CREDENTIALS.items() if k != "AWS_REGION"},
                      region_name="us-east-1")
    s3.create_bucket(Bucket="edge-models")
    for path in MOBILENET_V2.iterdir():
        if path.suffix in (".tflite", ".txt"):
            s3.upload_file(str(path), "edge-models", f"classifiers/mobilenet/{path.name}")
    server = start_server("TFLiteServer", env={**CREDENTIALS, "AWS_ENDPOINT_URL": s3_endpoint},
                          model_uri="s3://edge-models/classifiers/mobilenet")
    assert server.image("parrot.jpg")["jsonData"][0]["label"] == "macaw"


def test_model_from_an_http_archive(start_server, http_dir):
    root, url = http_dir
    with tarfile.open(root / "mobilenet.tar.gz", "w:gz") as archive:
        for path in MOBILENET_V2.iterdir():
            if path.suffix in (".tflite", ".txt"):
                archive.add(path, arcname=path.name)
    server = start_server("OpenVINOServer", model_uri=f"{url}/mobilenet.tar.gz")
    assert server.image("cat.bmp")["jsonData"][0]["label"] == "Egyptian cat"


def test_unreachable_model_uri_stops_the_server_with_one_line(http_dir):
    from test_startup_errors import start_and_fail

    _, url = http_dir
    line = start_and_fail("TFLiteServer", model_uri=f"{url}/missing.tflite")
    assert "cannot download model_uri" in line and "404" in line
