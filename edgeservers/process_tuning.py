"""How the server process is tuned to the machine it runs on: the CPUs it may use, how many inferences
run at once by default, and glibc's malloc thresholds (docs/architecture.md says why and what they saved)."""

from __future__ import annotations

import contextlib
import ctypes
import math
import os
from pathlib import Path


def available_cpus() -> int:
    """The CPUs this process may use: its CPU affinity, capped by a cgroup CPU quota (a container's
    `limits.cpu`, which affinity does not show), rounded up."""
    cpus = len(os.sched_getaffinity(0))
    quota = _cgroup_quota()
    return max(1, min(cpus, math.ceil(quota))) if quota else cpus


def _cgroup_quota() -> float | None:
    """CPUs allowed by the cgroup's CFS quota (v2 cpu.max, else v1 cfs_quota_us/period), None if unlimited."""
    try:
        limit, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        return None if limit == "max" else int(limit) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota_us = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").read_text())
        period_us = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read_text())
        return None if quota_us <= 0 else quota_us / period_us
    except (OSError, ValueError):
        return None


def adaptive_concurrency(concurrent_requests: int, cpus: int) -> dict[str, int]:
    """Defaults for pool_size and num_threads: as many inference slots as requests may run at once (at
    most one per CPU), num_threads every CPU, so that one request alone gets every core; the runtime
    gives the further slots only their share (TFLiteRuntime.slot_threads), so several at once share
    the cores without running many more threads than there are."""
    return {"pool_size": max(1, min(concurrent_requests, cpus)), "num_threads": cpus}


MMAP_THRESHOLD = 4 << 20  # larger buffers get mappings of their own, returned to the system at free()
TRIM_THRESHOLD = 8 << 20  # free memory an arena keeps at its top: a whole-decoded camera request's buffers
ARENA_MAX = 2  # malloc arenas shared by the request threads
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8


def tuned_malloc() -> bool:
    """Fixed limits for glibc's malloc, so that freed request buffers neither stay nor churn (True when set).

    glibc raises its mmap threshold to each freed mapping's size, and the trim threshold with it: after a
    few requests, bodies, decoded images and tensors would come from the arenas' heaps and stay resident
    once freed. Fixed thresholds (as MALLOC_MMAP_THRESHOLD_ and MALLOC_TRIM_THRESHOLD_ would set them) stop
    that growth, and 8 MiB kept at an arena's top holds what a camera request frees (its buffers together, with
    the image decoded whole) for the next one instead of faulting it in again; two arenas keep request threads
    from holding freed chunks each. Set in the main process before any request
    thread starts or any worker is forked.
    """
    try:
        mallopt = ctypes.CDLL(None).mallopt
        return all(
            mallopt(option, value)
            for option, value in (
                (_M_MMAP_THRESHOLD, MMAP_THRESHOLD),
                (_M_TRIM_THRESHOLD, TRIM_THRESHOLD),
                (_M_ARENA_MAX, ARENA_MAX),
            )
        )
    except (OSError, AttributeError):  # not glibc (musl has no mallopt of this kind)
        return False


def return_free_memory() -> None:
    """Give the memory malloc holds free back to the system (glibc's malloc_trim): once an in-place model update
    has released the old version's pool, whose buffers below MMAP_THRESHOLD came from the arenas' heaps."""
    with contextlib.suppress(OSError, AttributeError):  # not glibc
        ctypes.CDLL(None).malloc_trim(0)
