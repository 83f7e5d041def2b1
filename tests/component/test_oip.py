"""The Open Inference Protocol in-process (Seldon's Flask app with the OIP routes): the answer, not the
processes, is under test (tests/e2e/test_oip.py drives the real microservice with the Triton client)."""

from __future__ import annotations

import base64

from tests.support.paths import MOBILENET_V2, image_bytes


def test_confidence_threshold_marks_uncertain_answers_in_the_response_parameters(load_server):
    """An answer below confidence_threshold says so in the response's parameters."""
    server = load_server("TFLiteServer", model_uri=str(MOBILENET_V2), confidence_threshold=0.999, model_name="m")
    jpeg = base64.b64encode(image_bytes("parrot.jpg")).decode()  # macaw at 0.996: below the threshold
    body = {
        "inputs": [{"name": "input", "datatype": "BYTES", "shape": [1], "data": [{"b64": jpeg}]}],
        "outputs": [{"name": "answer"}],
    }
    reply = server.client.post("/v2/models/m/infer", json=body)
    assert reply.status_code == 200, reply.get_data(as_text=True)
    assert reply.get_json()["parameters"] == {"uncertain": True}
