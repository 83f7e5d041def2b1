"""model_uri pointing at S3 (a real S3 API: moto in server mode) and at https/http (a local server):
the server fetches the model at start and answers with it."""

from __future__ import annotations

from tests.support.clients import ModelServer, start_and_fail
from tests.support.paths import MOBILENET_V2
from tests.support.services import S3Server, tar_dir


def test_model_from_an_s3_prefix(start_server, s3_server: S3Server):
    s3_server.put(
        "edge-models",
        {
            f"classifiers/mobilenet/{path.name}": path.read_bytes()
            for path in MOBILENET_V2.iterdir()
            if path.suffix in (".tflite", ".txt")
        },
    )
    server = start_server("TFLiteServer", env=s3_server.env, model_uri="s3://edge-models/classifiers/mobilenet")
    assert server.image("parrot.jpg")["jsonData"][0]["label"] == "macaw"


def test_the_download_at_start_is_removed_when_the_server_stops(s3_server: S3Server, tmp_path):
    """A container restarted in place keeps its /tmp: each start's copy of a remote model goes with its process."""
    s3_server.put("edge-models", {"stops/model.tar.gz": tar_dir(MOBILENET_V2)})
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    for _ in range(2):
        server = ModelServer(
            "TFLiteServer", {**s3_server.env, "TMPDIR": str(tmp)}, model_uri="s3://edge-models/stops/model.tar.gz"
        ).start()
        try:
            assert server.image("parrot.jpg")["jsonData"][0]["label"] == "macaw"
            assert [p.name.startswith("edgeservers-model-") for p in tmp.iterdir()] == [True]
        finally:
            server.stop()
        assert server.proc is not None and server.proc.returncode == 0 and list(tmp.iterdir()) == []


def test_model_from_an_http_archive(start_server, web):
    web.files["mobilenet.tar.gz"] = tar_dir(MOBILENET_V2)
    server = start_server("OpenVINOServer", model_uri=web.url("mobilenet.tar.gz"))
    assert server.image("cat.bmp")["jsonData"][0]["label"] == "Egyptian cat"


def test_unreachable_model_uri_stops_the_server_with_one_line(web):
    line = start_and_fail("TFLiteServer", model_uri=web.url("missing.tflite"))
    assert "cannot download model_uri" in line and "404" in line
