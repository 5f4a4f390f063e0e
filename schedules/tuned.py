"""The hook through which our kernels are scheduled: ``schedule_kernel(workload, plan, default)``.

Outside any context it is ``default(workload, plan)``; inside ``tuning.apply_database(dir)`` (``using``) the
tuning database is asked for the workload's best record first (its trace is replayed on the workload); inside
``collect()`` every workload is recorded (``tvm_fxp.tune`` extracts its tasks that way).  Workloads are keyed
with the batch bound to 1 (the kernels are tuned at batch 1).  The kernels import this module; the design space
(``tuning``) imports the kernels, so the hook lives apart from it (no import cycle).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import threading
import warnings

import tvm
from tvm import tirx
from tvm.s_tir import Schedule

PLAN_ATTR = "tvm_fxp.kernel_plan"
_state = threading.local()


# ------------------------------------------------------------------------------------------ the hook

class Applied:
    """How many kernels of a build came from the database (``count``) and their names."""

    def __init__(self, database):
        self.database = database
        self.count = 0
        self.kernels: list = []


@contextlib.contextmanager
def using(applied: "Applied"):
    """Within this block, kernels are scheduled from ``applied.database`` where it has their workload."""
    before = getattr(_state, "applied", None)
    _state.applied = applied
    try:
        yield applied
    finally:
        _state.applied = before


@contextlib.contextmanager
def collect():
    """Within this block, every kernel workload scheduled is appended to the yielded list as
    ``(kind, workload, plan)`` (batch bound to 1)."""
    before = getattr(_state, "collected", None)
    _state.collected = []
    try:
        yield _state.collected
    finally:
        _state.collected = before


def kernel_kind(plan) -> str:
    if hasattr(plan, "outputs"):
        return "dense"
    return "conv2d_vnni" if plan.layout == "vnni" else "conv2d"


def plan_json(plan) -> str:
    return json.dumps({"kind": kernel_kind(plan), **dataclasses.asdict(plan)}, sort_keys=True)


def tuning_key(workload: tirx.PrimFunc) -> tirx.PrimFunc:
    """The workload as tuned: a symbolic batch bound to 1 (the first parameter's leading dimension)."""
    data = workload.params[0]
    shape = list(data.ty.shape)
    if isinstance(shape[0], tirx.IntImm):
        return workload
    one = tirx.IntImm("int64", 1)     # the kernels index in int64 (te.create_prim_func(..., "int64"))
    return workload.specialize({data: tvm.tirx.decl_buffer([one, *shape[1:]], data.ty.dtype, data.name)})


def schedule_kernel(workload: tirx.PrimFunc, plan, default):
    """``default(workload, plan)``, or the tuned schedule from the database in scope (see the module doc)."""
    if plan.acc_dtype == "float64":          # the simulation's exact float kernels are not tuned
        return default(workload, plan)
    workload = workload.with_attr(PLAN_ATTR, plan_json(plan))
    collected = getattr(_state, "collected", None)
    if collected is not None:
        collected.append((kernel_kind(plan), tuning_key(workload), plan))
    applied = getattr(_state, "applied", None)
    if applied is not None:
        tuned = _from_database(applied, workload)
        if tuned is not None:
            return tuned
    return default(workload, plan)


def _from_database(applied: Applied, workload: tirx.PrimFunc):
    key = tvm.IRModule({"main": tuning_key(workload)})
    db = applied.database
    if not db.has_workload(key):
        return None
    records = db.get_top_k(db.commit_workload(key), 1)
    if not records:
        return None
    sch = Schedule(tvm.IRModule({"main": workload}))
    try:
        records[0].trace.apply_to_schedule(sch, remove_postproc=False)
    except Exception as e:  # noqa: BLE001 -- a record that does not replay: keep the default schedule
        warnings.warn(f"tuning record for {workload.attrs[PLAN_ATTR]} does not apply ({e}); default schedule")
        return None
    applied.count += 1
    applied.kernels.append(json.loads(str(workload.attrs[PLAN_ATTR]))["kind"])
    return sch.mod["main"]
