"""The harness itself, where parallel test workers could make it flaky."""

from __future__ import annotations

from conftest import MOBILENET_V2, ModelServer
from harness import listening_on


def test_a_port_taken_before_the_server_binds_it_gets_the_server_new_ports():
    """Between free_port() and the server's bind, another process may take the port (a test in another
    worker, a client's source port): the server exits saying so, and the harness starts it on new ports."""
    server = ModelServer("TFLiteServer", model_uri=str(MOBILENET_V2))
    taken = server.grpc_port
    with listening_on(taken):
        server.start()
        try:
            assert server.grpc_port != taken
            assert server.image("parrot.jpg")["jsonData"][0]["label"] == "macaw"
        finally:
            server.stop()
