"""Every change made inside seldon-core's wrapper holds only for the wrapper it was written for.

The registry (edgeservers/seldon/patches.py) records each patch and reliance with the source hash of the code it
depends on; these tests fail when that code changes under it: another version, or a different source. Re-check
the patch against the new code before updating its hash, where it is declared.
"""

from __future__ import annotations

import importlib
import subprocess
import sys
import textwrap

import pytest

from edgeservers import seldon
from edgeservers.seldon import patches

seldon.install()  # every patch registers itself when it is applied
# The places where code or globals of the wrapper and the libraries under it are replaced (and a module global
# swapped for the time the wrapper builds a gRPC server without reflection).
PATCH_SITES = 17


def test_the_wrapper_is_the_version_the_patches_were_written_for():
    assert seldon.wrapper_version() == seldon.WRAPPER_VERSION


def test_every_patch_site_is_applied_through_the_registry():
    """Each replacement is in place and recorded with the code it relies on; none is made another way (the
    architecture test refuses assignments to other packages' attributes outside patches.py)."""
    assert len(patches.PATCHED) == len(set(patches.PATCHED)) == PATCH_SITES, patches.PATCHED
    for name in patches.PATCHED:
        module, qualname = name.split(":")
        owner = importlib.import_module(module)
        *path, attribute = qualname.split(".")
        for part in path:
            owner = getattr(owner, part)
        assert hasattr(owner, attribute), name
    assert all(r.source_sha and r.why for r in patches.REGISTRY.values())


@pytest.mark.parametrize("target", sorted(patches.REGISTRY))
def test_relied_on_code_is_unchanged(target):
    reliance = patches.REGISTRY[target]
    assert patches.source_sha(target) == reliance.source_sha, (
        f"{target} changed in the installed packages: re-check what edgeservers relies on there ({reliance.why})"
    )


def test_timers_land_in_the_buckets_numpy_histogram_gives():
    """The bisection (edgeservers/seldon/metrics.py) puts every TIMER value where Seldon's numpy.histogram put it."""
    import numpy as np
    from seldon_core.metrics import BINS, SeldonMetrics

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
        from edgeservers.seldon.metrics import metrics_manager
        manager = metrics_manager()
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


def test_the_wrapper_thread_settings_give_the_requests_one_process_runs_at_once(monkeypatch):
    """One REST worker and GRPC_WORKERS=1 (the wrapper's defaults): one process serves both, so their threads
    add up; with gRPC off, or in forked workers, each process serves one protocol."""
    from edgeservers.seldon import concurrent_requests

    for name in ("GUNICORN_WORKERS", "GUNICORN_THREADS", "GRPC_THREADS", "GRPC_WORKERS", "FLASK_SINGLE_THREADED"):
        monkeypatch.delenv(name, raising=False)
    assert concurrent_requests() == 2
    monkeypatch.setenv("GUNICORN_THREADS", "8")
    assert concurrent_requests() == 9
    monkeypatch.setenv("GUNICORN_THREADS", "1")
    monkeypatch.setenv("GRPC_THREADS", "4")
    assert concurrent_requests() == 5
    monkeypatch.setenv("GUNICORN_WORKERS", "2")  # REST and gRPC in processes of their own
    assert concurrent_requests() == 4
    monkeypatch.setenv("GUNICORN_WORKERS", "1")
    monkeypatch.setenv("GRPC_WORKERS", "0")
    assert concurrent_requests() == 1
