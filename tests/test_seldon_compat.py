"""The wrapper workarounds in edgeservers/seldon_compat.py hold only for the wrapper they were written for.

This fails when seldon-core changes under them: another version, or a different source for any
function they rely on. Re-check each workaround against the new code before updating the hashes.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import subprocess
import sys
import textwrap

import pytest

from edgeservers import seldon_compat

# sha256 (first 16 hex digits) of each relied-on function's source in seldon-core 1.17.1.
SOURCE_SHA256 = {
    "seldon_core.wrapper:get_rest_microservice": "83ef203c4f7cfc96",
    "seldon_core.wrapper:get_grpc_server": "acbb23017329a8c3",
    "seldon_core.metrics:SeldonMetrics.update": "1c71ad114bf12494",
    "seldon_core.metrics:SeldonMetrics._update_hist": "97aea11bcd6ccf39",
    "seldon_core.seldon_methods:health_status": "eafb8377db12964d",
    "seldon_core.seldon_methods:handle_raw_custom_metrics": "7a7449219b47c5b2",
    # REST serving
    "seldon_core.microservice:_make_rest_server_prod": "d1abe4bd738bde6b",
    "seldon_core.microservice:_make_rest_metrics_server": "6459ff2f1b453fcf",
    "seldon_core.gunicorn_utils:UserModelApplication.load": "1cca8c411f3b0ff2",
    "seldon_core.metrics:SeldonMetrics.__init__": "af793ef047852eb4",
    "seldon_core.wrapper:get_metrics_microservice": "71829aeb328669a8",
    "seldon_core.flask_utils:get_request": "4e2de390f9861b5f",
    "seldon_core.flask_utils:get_multi_form_data_request": "52946e584a1ce0a4",
    "tornado.http1connection:HTTP1Connection._read_message_inner": "823ab7277a0b5056",
    "tornado.tcpserver:TCPServer._handle_connection": "9c38c32e7f22ee10",
    "tornado.http1connection:HTTP1Connection._parse_headers": "b3c54fda82dad6ac",
    "tornado.http1connection:HTTP1Connection.detach": "bd8f827cec92a67f",
    "tornado.httputil:HTTPServerRequest.__init__": "189551b6385eb71e",
    "gunicorn.arbiter:Arbiter.stop": "8f62d8857b595156",
    "gunicorn.workers.base:Worker.__init__": "e0f1de2d60574066",
    "gunicorn.workers.base:Worker.init_process": "350cf06610586641",
    "werkzeug.wrappers.request:Request.make_form_data_parser": "c0c9d74d8f10b1c4",
    "werkzeug.sansio.multipart:MultipartDecoder.next_event": "5536f59ee7fca495",
    "seldon_core.wrapper:SeldonModelGRPC.Predict": "74e3f66d4ef872a2",
    "seldon_core.microservice:main": "584fe2ae31a79ef1",
    "seldon_core.microservice:start_servers": "7f3592a58382beda",
    "seldon_core.microservice:_make_grpc_server": "927b38ed32029257",
    "seldon_core.microservice:_run_grpc_server": "3d89ba00ca2e13bf",
    "seldon_core.microservice:_reserve_grpc_port": "20ac9bc2f5d71f96",
    # memory
    "seldon_core.metrics:SeldonMetrics.collect": "5d56ecbee53c4e9b",
}


def test_the_wrapper_is_the_version_the_workarounds_were_written_for():
    assert seldon_compat.wrapper_version() == seldon_compat.WRAPPER_VERSION


def test_every_relied_on_function_has_a_recorded_source():
    assert set(SOURCE_SHA256) == set(seldon_compat.RELIED_ON)


@pytest.mark.parametrize("key", sorted(seldon_compat.RELIED_ON))
def test_relied_on_wrapper_code_is_unchanged(key):
    module, qualname = key.split(":")
    original = importlib.import_module(module)
    for part in qualname.split("."):
        original = getattr(original, part)
    source = inspect.getsource(getattr(original, "__wrapped__", original))
    assert hashlib.sha256(source.encode()).hexdigest()[:16] == SOURCE_SHA256[key], (
        f"{key} changed in the installed seldon-core: re-check what seldon_compat relies on ({seldon_compat.RELIED_ON[key]})"
    )


def test_timers_land_in_the_buckets_numpy_histogram_gives():
    """seldon_compat's bisection puts every TIMER value where Seldon's numpy.histogram put it."""
    import numpy as np
    from seldon_core.metrics import BINS, SeldonMetrics

    seldon_compat.install()
    original = SeldonMetrics._update_hist.__wrapped__
    start = list(np.zeros(len(BINS) - 1))
    values = [0.0, 1e-4, *BINS[1:-1], *(np.nextafter(b, 0) for b in BINS[1:-1]), 0.0123, 29.9, 30.0, 31.0, 1e9, -1.0]
    for x in values:
        vals, total = SeldonMetrics._update_hist(x, start, 2.5)
        expected_vals, expected_total = original(x, start, 2.5)
        assert vals == list(expected_vals) and total == expected_total, x


def test_a_forked_process_cannot_reach_the_metrics_manager_once_its_process_is_gone():
    """A gunicorn worker orphaned by its arbiter's death clears its metrics on exit (Seldon's worker_exit):
    the Manager's listening socket, copied into the fork, used to accept that connection with no one to
    answer, and the worker waited forever. The copy is closed in every child: the connection is refused."""
    script = textwrap.dedent(
        """
        import os, signal, time
        from multiprocessing.connection import Client
        from edgeservers import seldon_compat
        manager = seldon_compat._metrics_manager()
        address, key = manager.address, bytes(manager._authkey)
        if os.fork():
            os._exit(0)  # the Manager's process ends; its forked child lives on
        time.sleep(0.5)
        signal.alarm(10)  # a connection nobody answers ends here, not never
        try:
            Client(address, authkey=key)
        except ConnectionRefusedError:
            print("refused")
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == "refused", result.stderr[-2000:]
