"""The wrapper workarounds in edgeservers/seldon_compat.py hold only for the wrapper they were written for.

This fails when seldon-core changes under them: another version, or a different source for any
function they rely on. Re-check each workaround against the new code before updating the hashes.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect

import pytest

from edgeservers import seldon_compat

# sha256 (first 16 hex digits) of each relied-on function's source in seldon-core 1.17.1.
SOURCE_SHA256 = {
    "seldon_core.wrapper:get_rest_microservice": "83ef203c4f7cfc96",
    "seldon_core.wrapper:get_grpc_server": "acbb23017329a8c3",
    "seldon_core.metrics:SeldonMetrics.update": "1c71ad114bf12494",
    "seldon_core.seldon_methods:health_status": "eafb8377db12964d",
    "seldon_core.seldon_methods:handle_raw_custom_metrics": "7a7449219b47c5b2",
    # memory: the metrics endpoint served from the metrics Manager's process
    "seldon_core.metrics:SeldonMetrics.__init__": "af793ef047852eb4",
    "seldon_core.metrics:SeldonMetrics.collect": "5d56ecbee53c4e9b",
    "seldon_core.microservice:main": "584fe2ae31a79ef1",
    "seldon_core.microservice:_make_rest_metrics_server": "6459ff2f1b453fcf",
    "seldon_core.microservice:start_servers": "7f3592a58382beda",
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
