"""TVM's thread pool for the kernels that have parallel loops (the simulation's float64 convs/matmuls).

TVM sizes its pool once, at the first parallel launch, to ``TVM_NUM_THREADS`` or else half the CPUs (it
assumes two hyper-threads per core), and cannot grow it later.  On a machine without SMT that leaves half the
cores idle during a precision search.  ``configure_pool`` (run when ``tvm_fxp.schedules`` is imported) sets
``TVM_NUM_THREADS`` to the number of physical cores this process may use, unless the user has set it.
The inference kernels have no parallel loops (they are scheduled for one thread), so only the simulation's
kernels see the difference.
"""

from __future__ import annotations

import os

import psutil

ENV = "TVM_NUM_THREADS"


def physical_cores() -> int:
    """Physical cores available to this process (CPU affinity, without hyper-thread siblings)."""
    try:
        allowed = len(os.sched_getaffinity(0))
    except AttributeError:       # not Linux
        allowed = os.cpu_count() or 1
    logical = psutil.cpu_count(logical=True) or allowed
    physical = psutil.cpu_count(logical=False) or logical
    return max(1, min(allowed, allowed * physical // logical))


def configure_pool() -> int:
    """Set ``TVM_NUM_THREADS`` (when unset) to ``physical_cores()``; returns the value in effect."""
    if not os.environ.get(ENV):
        os.environ[ENV] = str(physical_cores())
    return int(os.environ[ENV])
