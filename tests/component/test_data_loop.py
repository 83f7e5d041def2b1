"""Images by reference, refused in-process before any request: a URI outside image_store (another prefix,
bucket, host or scheme) reaches nothing, and without image_store the answer says how to enable references."""

from __future__ import annotations

import http.server
import threading
from urllib.parse import quote_plus

import pytest

from tests.support.paths import MOBILENET_V2
from tests.support.payloads import s3_record

BUCKET = "camera-frames"


class _Recorder(http.server.BaseHTTPRequestHandler):
    """Counts every request that reaches it: used as the S3 endpoint and as an http:// target."""

    server: _RecordingServer

    def _any(self) -> None:
        self.server.hits.append(self.path)
        self.send_response(500)
        self.end_headers()

    do_GET = do_HEAD = do_POST = do_PUT = _any

    def log_message(self, *args: object) -> None:
        pass


class _RecordingServer(http.server.ThreadingHTTPServer):
    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Recorder)
        self.hits: list[str] = []


@pytest.fixture(scope="module")
def guarded(load_server):
    """A server (in-process: the refusals are answers, not processes) whose S3 endpoint and every other
    address a request names record any request that reaches them (each test points the S3 client's
    environment at the recorder)."""
    recorder = _RecordingServer()
    threading.Thread(target=recorder.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{recorder.server_address[1]}"
    server = load_server(
        "TFLiteServer", model_uri=str(MOBILENET_V2), image_store=f"s3://{BUCKET}/cam 1/,s3://{BUCKET}/cam 2/"
    )
    yield server, recorder, url
    recorder.shutdown()


@pytest.mark.parametrize(
    "uri",
    [
        f"s3://{BUCKET}/private/parrot.jpg",  # same bucket, outside the prefix
        f"s3://{BUCKET}/cam 1/../private/parrot.jpg",  # climbing out of it
        f"s3://{BUCKET}/cam 10/parrot.jpg",  # a prefix of the prefix's name is not inside it
        "s3://other-bucket/cam 1/parrot.jpg",  # another bucket
        "s3://127.0.0.1:9000/cam 1/parrot.jpg",  # a host in the bucket's place
        "http://{recorder}/cam 1/parrot.jpg",  # another scheme, a reachable host
        "http://169.254.169.254/latest/meta-data/",  # link-local (cloud metadata)
        "file:///etc/passwd",
    ],
)
def test_uris_outside_image_store_are_refused_before_any_request(guarded, uri, monkeypatch):
    server, recorder, url = guarded
    for name, value in {"AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s", "AWS_ENDPOINT_URL": url}.items():
        monkeypatch.setenv(name, value)  # where the S3 client would go, were it created
    uri = uri.replace("{recorder}", url.removeprefix("http://"))
    for body in (
        {"jsonData": {"image_uri": uri}},
        {
            "Records": [
                s3_record(BUCKET, "cam 1/cat.bmp"),
                {
                    **s3_record(BUCKET, "x"),
                    "s3": {
                        "bucket": {"name": uri.split("/")[2]},
                        "object": {"key": quote_plus("/".join(uri.split("/")[3:]))},
                    },
                },
            ]
        },
    ):
        response = server.rest(body)
        assert response.status_code in (400, 403), response.text
        assert "image_store" in response.json()["status"]["info"] or "s3://" in response.json()["status"]["info"]
    assert recorder.hits == []  # nothing was fetched, not even the allowed first record


def test_references_are_refused_with_how_to_enable_them_when_image_store_is_unset(mobilenet_in_process):
    response = mobilenet_in_process.rest({"jsonData": {"image_uri": f"s3://{BUCKET}/cam 1/parrot.jpg"}})
    assert response.status_code == 400 and "set the image_store parameter" in response.json()["status"]["info"]
