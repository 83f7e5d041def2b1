"""Uncertain answers escalated to a bigger model (escalate_url, data_loop/escalation.py): a small edge model
(MobileNet v1 0.25) in front of a second real server with a bigger bundled one (MobileNet v2); a port that
accepts and never answers; a target that redirects elsewhere; what tritonclient itself sends."""

from __future__ import annotations

import base64
import json
import struct
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import grpc
import pytest
import requests
from google.protobuf import json_format
from open_inference.grpc import protocol as pb
from seldon_core.proto import prediction_pb2

from tests.support.paths import MOBILENET_V1, MOBILENET_V2, image_bytes
from tests.support.services import Gate
from tests.support.triton import TritonClient

BIG = "mobilenet_v2_1.0_224_quant"  # the bigger model's OIP name (its file's stem)
SMALL = "mobilenet_v1_0.25_128_quant"
UNSURE = ("cat.bmp", "bird.bmp")  # the small model's top scores: 0.32, 0.43
SURE = "parrot.jpg"  # 0.83
HANG_BOUND = 30.0  # s: "does not hang", far above escalate_timeout on a busy machine; never a timing claim


@pytest.fixture(scope="module")
def big(start_server):
    return start_server("TFLiteServer", env={"GRPC_WORKERS": "0"}, model_uri=str(MOBILENET_V2))


@pytest.fixture(scope="module")
def edge(start_server, big):
    """The small model, escalating what it answers below 0.5 (REST, gRPC and both protocols)."""
    return start_server(
        "TFLiteServer",
        model_uri=str(MOBILENET_V1),
        confidence_threshold=0.5,
        escalate_url=f"{big.url}/v2/models/{BIG}/infer",
        metrics_interval=0.0,
    )


@pytest.fixture(scope="module")
def alone(load_server):
    """The small model on its own: what the edge answers without a bigger model."""
    return load_server("TFLiteServer", model_uri=str(MOBILENET_V1))


def binary_infer(image: bytes, name: str = "input", outputs: list[dict] | None = None) -> tuple[bytes, dict]:
    """An OIP REST infer request with one BYTES image in the binary tensor data extension."""
    header = {
        "inputs": [
            {"name": name, "shape": [1], "datatype": "BYTES", "parameters": {"binary_data_size": len(image) + 4}}
        ]
    }
    if outputs is not None:
        header["outputs"] = outputs
    text = json.dumps(header).encode()
    return text + struct.pack("<I", len(image)) + image, {"Inference-Header-Content-Length": str(len(text))}


def oip_answer(server, model: str, image: bytes) -> tuple[Any, dict]:
    body, headers = binary_infer(image, outputs=[{"name": "answer", "parameters": {"binary_data": False}}])
    reply = requests.post(f"{server.url}/v2/models/{model}/infer", data=body, headers=headers, timeout=30)
    assert reply.status_code == 200, reply.text
    doc = reply.json()
    return json.loads(doc["outputs"][0]["data"][0]), doc.get("parameters", {})


# --- a bigger model that answers ----------------------------------------------------------------------------


def test_uncertain_answers_are_the_bigger_models_own_with_the_edge_answer_beside(edge, big, alone):
    for photo in UNSURE:
        reply = edge.image(photo)
        assert reply["jsonData"] == big.image(photo)["jsonData"]  # the bigger model's answer, as it gives it
        tags = reply["meta"]["tags"]
        assert tags["answered_by"] == "escalated" and tags["uncertain"] is True and tags["model"] == SMALL
        assert tags["edge_answer"] == alone.image(photo)["jsonData"] and "escalation_error" not in tags
    assert edge.image("cat.bmp")["jsonData"][0]["label"] == "Egyptian cat"  # the small model said tiger cat
    sure = edge.image(SURE)
    assert sure["jsonData"] == alone.image(SURE)["jsonData"]
    assert {k: sure["meta"]["tags"][k] for k in ("answered_by", "uncertain")} == {
        "answered_by": "edge",
        "uncertain": False,
    }
    assert "escalation_error" not in sure["meta"]["tags"] and "edge_answer" not in sure["meta"]["tags"]

    message = prediction_pb2.SeldonMessage(binData=image_bytes("cat.bmp"))  # v1 over gRPC: the same
    grpc_reply = json_format.MessageToDict(edge.grpc(message))
    assert grpc_reply["jsonData"] == big.image("cat.bmp")["jsonData"]
    assert grpc_reply["meta"]["tags"]["answered_by"] == "escalated"
    assert grpc_reply["meta"]["tags"]["edge_answer"] == alone.image("cat.bmp")["jsonData"]


def test_open_inference_protocol_answers_carry_who_answered_in_their_parameters(edge, big, alone):
    answer, parameters = oip_answer(edge, SMALL, image_bytes("bird.bmp"))
    assert answer == oip_answer(big, BIG, image_bytes("bird.bmp"))[0]
    assert parameters["answered_by"] == "escalated" and parameters["uncertain"] is True
    assert json.loads(parameters["edge_answer"]) == alone.image("bird.bmp")["jsonData"]

    request = pb.ModelInferRequest(model_name=SMALL)
    request.inputs.add(name="input", datatype="BYTES", shape=[1])
    image = image_bytes("bird.bmp")
    request.raw_input_contents.append(struct.pack("<I", len(image)) + image)
    request.outputs.add(name="answer")
    with grpc.insecure_channel(f"127.0.0.1:{edge.grpc_port}") as channel:
        infer = channel.unary_unary(
            "/inference.GRPCInferenceService/ModelInfer",
            request_serializer=pb.ModelInferRequest.SerializeToString,
            response_deserializer=pb.ModelInferResponse.FromString,
        )
        reply = infer(request, timeout=30)
    assert json.loads(reply.raw_output_contents[0][4:]) == answer
    assert reply.parameters["answered_by"].string_param == "escalated" and reply.parameters["uncertain"].bool_param
    assert json.loads(reply.parameters["edge_answer"].string_param) == alone.image("bird.bmp")["jsonData"]


def test_escalations_are_counted(edge):
    before = counters(edge.prometheus())
    for photo in (*UNSURE, SURE):
        edge.image(photo)
    after = counters(edge.prometheus())
    assert after.get("edgeservers_escalations_total", 0) - before.get("edgeservers_escalations_total", 0) == 2
    assert after["edgeservers_escalation_seconds_count"] - before.get("edgeservers_escalation_seconds_count", 0) == 2


def counters(text: str, **labels: str) -> dict[str, float]:
    """Prometheus samples by name, summed over their labels (only those with `labels`)."""
    found: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("#") or "{" not in line:
            continue
        name, rest = line.split("{", 1)
        if all(f'{k}="{v}"' in rest for k, v in labels.items()):
            found[name] = found.get(name, 0.0) + float(line.rsplit(" ", 1)[1])
    return found


def test_a_classifier_without_an_answer_output_is_read_through_the_classification_extension(load_server, big):
    """A target as Triton serves a classifier (no `answer` output): its first output's top top_k."""
    target = load_server("TFLiteServer", model_uri=str(MOBILENET_V2), postprocess="none", model_name="plain")
    with served(target) as url:
        edge = load_server(
            "TFLiteServer", model_uri=str(MOBILENET_V1), confidence_threshold=0.5, escalate_url=f"{url}/v2/models/plain"
        )
        reply = edge.image("cat.bmp")
    assert reply["meta"]["tags"]["answered_by"] == "escalated", reply["meta"]["tags"]
    expected = big.image("cat.bmp")["jsonData"]
    assert [(a["label"], a["index"]) for a in reply["jsonData"]] == [(a["label"], a["index"]) for a in expected]
    assert all(abs(a["score"] - b["score"]) < 1e-6 for a, b in zip(reply["jsonData"], expected))


def test_an_uncertain_image_sent_home_carries_the_bigger_models_answer(load_server, big, tmp_path, monkeypatch):
    """The spool's item (read from disk, the store unreachable) holds both answers for retraining."""
    from edgeservers.data_loop import spool

    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    edge = load_server(
        "TFLiteServer",
        model_uri=str(MOBILENET_V1),
        confidence_threshold=0.5,
        escalate_url=f"{big.url}/v2/models/{BIG}",
        uncertain_store="s3://retraining/",
        uncertain_spool_dir=str(tmp_path),
    )
    reply = edge.image("cat.bmp")
    ready = tmp_path / spool.READY

    def written() -> list[str]:
        return spool.ready_items(ready)

    deadline = time.monotonic() + 10
    while not written() and time.monotonic() < deadline:
        time.sleep(0.05)
    (item,) = [spool.decode((ready / name).read_bytes()) for name in written()]
    assert item.sidecar["escalated_answer"] == reply["jsonData"] == big.image("cat.bmp")["jsonData"]
    assert item.sidecar["answer"] == reply["meta"]["tags"]["edge_answer"]


# --- a bigger model that cannot answer ------------------------------------------------------------------------


def test_a_black_hole_costs_escalate_timeout_until_the_breaker_opens_then_nothing(load_server, big, alone):
    """Behind a port that accepts and never answers: the edge answer once escalate_timeout has passed, twice; then
    the breaker is open and answers come without a connection tried; once the cool-down has passed and the bigger
    model is reachable again, one trial call closes the breaker."""
    gate = Gate(("127.0.0.1", big.http_port))
    gate.mode = "blackhole"
    edge = load_server(
        "TFLiteServer",
        own_metrics=True,
        model_uri=str(MOBILENET_V1),
        confidence_threshold=0.5,
        escalate_url=f"{gate.url}/v2/models/{BIG}/infer",
        escalate_timeout=1.0,
        escalate_breaker_failures=2,
        escalate_breaker_cooldown=2.0,
        metrics_interval=0.0,
    )
    for _ in range(2):
        seconds, reply = timed(edge, "cat.bmp")
        assert 1.0 <= seconds < HANG_BOUND, seconds  # waited escalate_timeout for the black hole, and no longer hangs
        assert reply["jsonData"] == alone.image("cat.bmp")["jsonData"]
        assert reply["meta"]["tags"]["answered_by"] == "edge"
        assert reply["meta"]["tags"]["escalation_error"] == "timeout: no answer within escalate_timeout=1 s"
    opened, tried = time.monotonic(), gate.accepted
    reply = edge.image("cat.bmp")
    assert reply["meta"]["tags"]["escalation_error"].startswith(
        "breaker open: 2 escalations failed in a row; next try in"
    )
    assert gate.accepted == tried  # no call tried
    metrics = edge.prometheus()
    assert counters(metrics, reason="timeout")["edgeservers_escalation_failures_total"] == 2
    assert counters(metrics)["edgeservers_escalations_skipped_total"] == 1
    assert counters(metrics)["edgeservers_escalation_breaker_opened_total"] == 1
    assert "edgeservers_escalation_breaker_closed_total" not in counters(metrics)

    gate.mode = "open"
    time.sleep(max(0.0, opened + 2.0 - time.monotonic()))
    for _ in range(2):  # the trial call, then the breaker is closed
        reply = edge.image("cat.bmp")
        assert reply["meta"]["tags"]["answered_by"] == "escalated", reply["meta"]["tags"]
    assert counters(edge.prometheus())["edgeservers_escalation_breaker_closed_total"] == 1
    gate.close()


def timed(server, photo: str) -> tuple[float, dict]:
    start = time.perf_counter()
    reply = server.image(photo)
    return time.perf_counter() - start, reply


class Recorder(ThreadingHTTPServer):
    """A local HTTP target that records every request (method, path, headers, body): it answers the model
    metadata a BYTES-in, answer-out model would have, then `status` (a 307 to `location`, or an error)."""

    daemon_threads = True

    def __init__(self, status: int = 500, location: str = "", metadata: bytes = b""):
        self.status, self.location = status, location
        self.metadata = (
            metadata
            or json.dumps(
                {"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1]}], "outputs": [{"name": "answer"}]}
            ).encode()
        )
        self.seen: list[dict[str, Any]] = []
        super().__init__(("127.0.0.1", 0), _Recording)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Recording(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _answer(self) -> None:
        server: Recorder = self.server  # type: ignore[assignment]
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        server.seen.append({"method": self.command, "path": self.path, "headers": dict(self.headers), "body": body})
        if self.command == "GET" and not server.location:
            return self._send(200, server.metadata)
        if server.location:
            self.send_response(server.status)
            self.send_header("Location", server.location)
            self.send_header("Content-Length", "0")
            return self.end_headers()
        self._send(server.status, b'{"error": "no"}')

    def _send(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def recorders() -> Iterator[Any]:
    started: list[Recorder] = []

    def start(**kwargs: Any) -> Recorder:
        server = Recorder(**kwargs)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.shutdown()
        server.server_close()


def test_a_target_that_redirects_elsewhere_is_not_followed(load_server, recorders):
    elsewhere = recorders()
    redirecting = recorders(status=307, location=f"{elsewhere.url}/v2/models/big/infer")
    edge = load_server(
        "TFLiteServer",
        model_uri=str(MOBILENET_V1),
        confidence_threshold=0.5,
        escalate_url=f"{redirecting.url}/v2/models/big/infer",
    )
    tags = edge.image("cat.bmp")["meta"]["tags"]
    assert tags["answered_by"] == "edge"
    assert tags["escalation_error"] == "redirect: the target answered 307; redirects are not followed"
    assert redirecting.seen and elsewhere.seen == []


def test_a_target_that_is_not_a_model_server_gets_the_edge_answer(load_server, recorders):
    page = recorders(metadata=b"<html>a login page</html>")
    edge = load_server(
        "TFLiteServer", model_uri=str(MOBILENET_V1), confidence_threshold=0.5, escalate_url=f"{page.url}/v2/models/m"
    )
    reply = edge.rest({"binData": base64.b64encode(image_bytes("cat.bmp")).decode()})
    assert reply.status_code == 200
    tags = reply.json()["meta"]["tags"]
    assert tags["answered_by"] == "edge"
    assert tags["escalation_error"] == "answer: the target's metadata or answer is unreadable (JSONDecodeError)"


def test_the_image_goes_as_tritonclient_sends_it_with_the_headers_file_and_no_credential_anywhere(
    load_server, recorders, tmp_path, caplog
):
    target = recorders(status=503)
    secret = "Bearer s3cr3t-token-0042"
    headers_file = tmp_path / "headers"
    headers_file.write_text(f"# credentials for the bigger model\nAuthorization: {secret}\nX-Site: dock-3\n")
    edge = load_server(
        "TFLiteServer",
        model_uri=str(MOBILENET_V1),
        confidence_threshold=0.5,
        escalate_url=f"{target.url}/v2/models/big/versions/2/infer",
        escalate_headers_file=str(headers_file),
    )
    reply = edge.rest({"binData": base64.b64encode(image_bytes("cat.bmp")).decode()})
    tags = reply.json()["meta"]["tags"]
    assert tags["answered_by"] == "edge" and tags["escalation_error"] == "status: the target answered 503: no"
    metadata, ours = target.seen
    assert (metadata["method"], metadata["path"]) == ("GET", "/v2/models/big/versions/2")
    assert (ours["method"], ours["path"]) == ("POST", "/v2/models/big/versions/2/infer")
    for request in (metadata, ours):
        assert request["headers"]["Authorization"] == secret and request["headers"]["X-Site"] == "dock-3"
    assert secret not in reply.text and "s3cr3t" not in caplog.text

    client = TritonClient(tmp_path)
    try:
        refused = client.one(  # the target refuses every inference; what matters is the request it saw
            {
                "protocol": "http",
                "url": target.url.removeprefix("http://"),
                "op": "infer",
                "model": "big",
                "version": "2",
                "inputs": [{"name": "image", "datatype": "BYTES", "files": [client.file(image_bytes("cat.bmp"))]}],
                "binary": True,
                "outputs": [{"name": "answer", "binary": False}],
            }
        )
    finally:
        client.close()
    assert refused["status"] == "503", refused
    theirs = target.seen[-1]
    assert theirs["path"] == ours["path"]
    split = [int(r["headers"]["Inference-Header-Content-Length"]) for r in (ours, theirs)]
    header_ours, header_theirs = (json.loads(r["body"][:n]) for r, n in zip((ours, theirs), split))
    assert header_ours == header_theirs  # inputs and requested outputs alike
    assert (
        ours["body"][split[0] :]
        == theirs["body"][split[1] :]
        == struct.pack("<I", len(image_bytes("cat.bmp"))) + image_bytes("cat.bmp")
    )


@pytest.mark.parametrize(
    "params, message",
    [
        (
            {"escalate_url": "ftp://big/v2/models/m"},
            "escalate_url='ftp://big/v2/models/m': expected an http:// or https:// URL",
        ),
        (
            {"escalate_url": "http://u:p@big/v2/models/m"},
            "credentials in the URL are refused: put them in escalate_headers_file",
        ),
        ({"escalate_url": "http://big:8000/predict"}, "expected the path /v2/models/NAME[/versions/V][/infer]"),
        ({"escalate_headers_file": "/no/such/file"}, "escalate_headers_file=/no/such/file: No such file or directory"),
        ({"escalate_timeout": 0}, "escalate_timeout=0.0: expected seconds > 0"),
        ({"escalate_breaker_failures": 0}, "escalate_breaker_failures=0: expected a whole number >= 1"),
        ({"confidence_threshold": None}, "escalate_url needs confidence_threshold"),
        ({"postprocess": "none"}, "escalate_url needs answers that can be uncertain"),
    ],
)
def test_bad_escalation_parameters_stop_the_server_with_one_line(fail, params, message):
    given = {"model_uri": str(MOBILENET_V1), "confidence_threshold": 0.5, "escalate_url": "http://big:8000/v2/models/m"}
    given.update(params)
    line = fail("TFLiteServer", **{k: v for k, v in given.items() if v is not None})
    assert message in line, line


def test_a_headers_file_line_in_error_is_named_never_shown(fail, tmp_path):
    headers = tmp_path / "headers"
    headers.write_text("Authorization: Bearer fine\nBearer s3cr3t-without-a-name\n")
    line = fail(
        "TFLiteServer",
        model_uri=str(MOBILENET_V1),
        confidence_threshold=0.5,
        escalate_url="http://big:8000/v2/models/m",
        escalate_headers_file=str(headers),
    )
    assert "line 2 is not `Name: value`" in line and "s3cr3t" not in line and "fine" not in line


# --- a second real server over HTTP, from this process --------------------------------------------------------


class served:
    """An in-process server's Seldon REST app (with the Open Inference Protocol's routes) on a loopback port."""

    def __init__(self, server: Any):
        from werkzeug.serving import make_server

        self._http = make_server("127.0.0.1", 0, server.client.application, threaded=True)

    def __enter__(self) -> str:
        threading.Thread(target=self._http.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{self._http.server_port}"

    def __exit__(self, *exc: Any) -> None:
        self._http.shutdown()
        self._http.server_close()
