"""The harness itself, where parallel test workers could make it flaky, and its measurements."""

from __future__ import annotations

import subprocess
import sys
import time

from tests.support.clients import ModelServer
from tests.support.harness import listening_on, stop_process_group, tree_cpu_s
from tests.support.paths import MOBILENET_V2


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


def test_tree_cpu_counts_the_cpu_of_every_live_process_of_the_tree():
    """bench.defaults counts the server's CPU per request with it: a child's work counts, sleep does not."""
    child = "import time\nend = time.process_time() + 0.3\nwhile time.process_time() < end: pass\ntime.sleep(60)"
    parent = f"import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', {child!r}]); time.sleep(60)"
    tree = subprocess.Popen([sys.executable, "-c", parent], start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while tree_cpu_s(tree.pid) < 0.3 and time.monotonic() < deadline:
            time.sleep(0.05)
        used = tree_cpu_s(tree.pid)
        time.sleep(0.3)  # both asleep now
        assert used >= 0.3 and tree_cpu_s(tree.pid) - used < 0.05
    finally:
        stop_process_group(tree, timeout=5)
