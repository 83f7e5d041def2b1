"""How many interpreters and threads the cores allow (edgeservers/process_tuning.py)."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize(
    "requests_at_once, cpus, expected",
    [
        (1, 2, {"pool_size": 1, "num_threads": 2}),  # the chart's one REST thread: one request gets both cores
        (8, 2, {"pool_size": 2, "num_threads": 2}),  # many threads: a slot per core, each with every core
        (2, 4, {"pool_size": 2, "num_threads": 4}),
        (3, 1, {"pool_size": 1, "num_threads": 1}),
    ],
)
def test_adaptive_concurrency_gives_one_request_every_core(requests_at_once, cpus, expected):
    from edgeservers.process_tuning import adaptive_concurrency

    chosen = adaptive_concurrency(requests_at_once, cpus)
    assert chosen == expected and chosen["pool_size"] <= min(requests_at_once, cpus)
