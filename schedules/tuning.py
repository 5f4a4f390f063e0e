"""The design space of our integer kernels, for MetaSchedule, and the hook that applies tuned schedules.

Each kernel of this package (``conv2d_int``, ``conv2d_vnni``, ``dense_int``) is a TE compute (the workload:
data and weight layouts, the accumulator dtype the plan proved, the fused requantize epilogue) plus a
schedule.  Tuning keeps the workload and searches the schedule: ``design_space(sch)`` is a MetaSchedule
``ScheduleFn`` body that schedules a workload with our schedule's structure, every knob a
``sample_categorical`` decision whose *initial* value is what the hand-written schedule picks, so the
default schedule is one point of the space (``default_decisions`` lists it) and the search can only move
along our knobs:

- ``register_block``: output positions (conv2d) or output vectors (dense) sharing one loaded weight vector;
- ``vector_width``: lanes per vector statement; narrower than the packed lanes, the lanes loop is split and
  its outer part placed above the reduction (fewer registers per position, hence larger blocks fit);
- ``k_unroll``: the reduction over input channels (conv2d) or over k (dense) split and its inner part
  unrolled (more independent loads and multiply-accumulates in flight between the accumulator updates);
- ``unpack_vector`` (conv2d): the unpacking of the blocked result to NCHW vectorized over that many output
  columns (the default schedule leaves this loop to LLVM: 1);
- two structural alternatives, one design space each: the loop order (``channels``: output-channel vectors
  outside the position blocks, as today, or ``positions``: position blocks outside) and the epilogue
  placement (``registers``: requantized as the accumulators are written back, as today, or ``block``: after
  the block, as a separate vectorized pass).

No schedule primitive changes what a block computes, so every candidate accumulates in the plan's dtype;
integer sums are exact modulo ``2**bits`` in any order (see ``conv2d_int``), so every candidate gives the
default schedule's integers bit for bit.  TVM's generic rules (multi-level tiling etc.) never see these
kernels: the ``ScheduleFn`` has no schedule rules and no postprocessors.

The hook: ``schedule_kernel(workload, plan, default)`` is how the kernels get scheduled.  Outside any
context it is ``default(workload, plan)``.  Inside ``apply_database(dir)`` the tuning database is asked for
the workload's best record first (its trace is replayed on the workload); inside ``collect()`` every
workload is recorded (``tvm_fxp.tune`` extracts its tasks that way).  Workloads are keyed with the batch
bound to 1 (the kernels are tuned at batch 1); the trace does not depend on the batch, so it applies to a
symbolic batch too.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

from tvm.s_tir import Schedule

from .tuned import (PLAN_ATTR, Applied, collect, kernel_kind, plan_json, schedule_kernel,  # noqa: F401 -- the hook's
                    tuning_key, using)                                               # names, as before


@contextlib.contextmanager
def apply_database(path):
    """Within this block, kernels whose workload the tuning database at ``path`` (a directory written by
    ``tvm-fxp tune``) has a record for are scheduled by that record; yields an ``Applied``."""
    from tvm.s_tir import meta_schedule as ms

    from . import conv2d_vnni  # noqa: F401 -- registers the tensor intrinsic the records' traces name

    path = Path(path)
    files = (path / "database_workload.json", path / "database_tuning_record.json")
    if not all(f.is_file() for f in files):
        raise FileNotFoundError(f"{path} is not a tuning database (no {files[0].name}/{files[1].name}): "
                                "give the DIR/tuning directory written by `tvm-fxp tune`")
    applied = Applied(ms.database.JSONDatabase(str(files[0]), str(files[1]), allow_missing=False))
    with using(applied):
        yield applied



# ------------------------------------------------------------------------------------------ the design space

def _divisors(n: int, limit: int) -> list:
    return [d for d in range(1, min(n, limit) + 1) if n % d == 0]


def _candidates(default: int, options) -> tuple:
    """``(candidates, index of default)``: ``options`` with the default in it, sorted."""
    values = sorted(set(int(o) for o in options) | {int(default)})
    return values, values.index(int(default))


def _sample(sch, name: str, values: list, default_index: int, decisions: dict):
    """A categorical decision (uniform over ``values``) starting at the default; ``decisions`` records the
    choice list for reports."""
    decisions[name] = values
    return sch.sample_categorical(values, [1.0 / len(values)] * len(values), decision=default_index)


def _blocks(default: int, extent: int) -> list:
    """Register blocks: divisors of ``extent`` up to 16.  Never 1 next to larger blocks: s_tir drops loops of
    extent 1 from the write-back of a cache, so a block of 1 would change the loop structure the trace
    replays on (a trace must replay for every decision)."""
    options = _divisors(extent, 16)
    return [1] if default == 1 else [r for r in options if r > 1]


def knobs(plan) -> dict:
    """``{knob: (candidates, index of the default schedule's value)}`` of a kernel's plan."""
    kind = kernel_kind(plan)
    if kind == "dense":
        vb = plan.vector_blocks
        rk = plan.padded_reduce // plan.split
        out = {"register_block": _candidates(plan.block, _blocks(plan.block, vb)),
               "k_unroll": _candidates(1, _divisors(rk, 8))}
        if plan.lanes >= 8:
            out["vector_width"] = _candidates(plan.lanes, [plan.lanes // 2, plan.lanes])
        return out
    blocks = _blocks(plan.block, plan.padded_positions)
    unpack = _candidates(1, _divisors(plan.out_hw[1], 16))
    if kind == "conv2d_vnni":
        return {"register_block": _candidates(plan.block, blocks),
                "k_unroll": _candidates(1, _divisors(-(-plan.channels // 4), 4)), "unpack_vector": unpack}
    out = {"register_block": _candidates(plan.block, blocks),
           "k_unroll": _candidates(1, _divisors(plan.in_per_group, 4))}
    if plan.lanes >= 8:
        out["vector_width"] = _candidates(plan.lanes, [plan.lanes // 2, plan.lanes])
    out["unpack_vector"] = unpack
    return out


SKETCHES = (("channels", "registers"), ("positions", "registers"), ("channels", "block"))
"""(loop order, epilogue placement) of the design spaces; the first is today's schedule."""


def design_space(sch: Schedule):
    """MetaSchedule ``ScheduleFn`` body: one schedule per sketch of the workload in ``sch`` (which must carry
    ``PLAN_ATTR``), every knob sampled with the default schedule's value as its initial decision."""
    from . import conv2d_int, dense_int
    from .conv2d_vnni import INTRIN

    func = sch.mod["main"]
    info = json.loads(str(func.attrs[PLAN_ATTR]))
    kind = info.pop("kind")
    if kind == "dense":
        plan = dense_int.DensePlan(**info)
    else:
        info = {k: tuple(v) if isinstance(v, list) else v for k, v in info.items()}
        plan = conv2d_int.Conv2dPlan(**info)
    from .common import has_block as _has_block

    has_epilogue = _has_block(sch, "epilogue")
    spaces = []
    for order, epilogue in SKETCHES:
        if epilogue == "block" and not has_epilogue:
            continue
        if kind == "dense" and (order, epilogue) != SKETCHES[0]:
            continue    # one row at batch 1, and the epilogue already follows the sum over the k-splits
        s = sch.copy()
        s.seed(len(spaces) + 1)
        if kind == "dense":
            _dense_space(s, plan, epilogue)
        else:
            _conv_space(s, plan, order, epilogue, INTRIN if kind == "conv2d_vnni" else None)
        spaces.append(s)
    return spaces


def _conv_space(sch, plan, order: str, epilogue: str, intrin) -> None:
    """``conv2d_int.schedule_conv2d`` (or ``conv2d_vnni.schedule`` with ``intrin``) with sampled knobs."""
    from .common import has_block as _has_block

    k = knobs(plan)
    d: dict = {}
    conv = sch.get_sblock("conv")
    block = _sample(sch, "register_block", *k["register_block"], d)
    unroll_k = _sample(sch, "k_unroll", *k["k_unroll"], d)
    if intrin is None:
        n, g, ob, p, v, ri, rky, rkx = sch.get_loops(conv)
        outer = [n, g]
    else:
        n, ob, p, v, ri, rky, rkx, rk = sch.get_loops(conv)
        outer = [n]
    po, pi = sch.split(p, [None, block])
    rio, rii = sch.split(ri, [None, unroll_k])
    if intrin is None and "vector_width" in k:
        vo, vi = sch.split(v, [None, _sample(sch, "vector_width", *k["vector_width"], d)])
        lane_tiles = [vo]
    else:
        vi, lane_tiles = v, []
    blocks = [ob, po] if order == "channels" else [po, ob]
    tail = [pi, vi] if intrin is None else [pi, vi, rk]
    sch.reorder(*outer, *blocks, *lane_tiles, rio, rky, rkx, rii, *tail)
    anchor = blocks[1]
    acc = sch.cache_write(conv, 0, "local")
    sch.reverse_compute_at(acc, anchor)
    if _has_block(sch, "epilogue"):
        epi = sch.get_sblock("epilogue")
        if epilogue == "registers":
            sch.reverse_compute_inline(epi)
        else:
            sch.reverse_compute_at(epi, anchor)
            sch.vectorize(sch.get_loops(epi)[-1])
    if intrin is None:
        sch.vectorize(vi)
    sch.unroll(pi)
    sch.unroll(rii)
    if intrin is None and plan.kernel[1] <= 7:
        sch.unroll(rkx)
    *_, ai, av = sch.get_loops(acc)
    sch.vectorize(av)
    sch.unroll(ai)
    init = sch.decompose_reduction(conv, rio)
    *_, ii, iv = sch.get_loops(init)
    sch.vectorize(iv)
    sch.unroll(ii)
    # the unpacking to NCHW (the kernel's last stage, left to LLVM by the default schedule): its rows
    # vectorized in pieces of ``unpack_vector`` output columns (1: as today)
    unpack_vector = _sample(sch, "unpack_vector", *k["unpack_vector"], d)
    *_, ux = sch.get_loops(sch.get_sblock("conv_unpack"))
    _, uxi = sch.split(ux, [None, unpack_vector])
    sch.vectorize(uxi)
    if intrin is None:
        pad = sch.get_sblock("data_pad" if plan.layout == "channels" else "data_pack")
        sch.compute_at(pad, n)
        if plan.layout == "groups":
            sch.vectorize(sch.get_loops(pad)[-1])
    else:
        pad = sch.get_sblock("data_pad")
        sch.compute_at(pad, n)
        sch.vectorize(sch.get_loops(pad)[-1])
        sch.tensorize(vi, intrin)


def _dense_space(sch, plan, epilogue: str) -> None:
    """``dense_int.schedule_dense`` with sampled knobs."""
    from .common import has_block as _has_block

    k = knobs(plan)
    d: dict = {}
    dense = sch.get_sblock("dense")
    i, nb, u, v, rk = sch.get_loops(dense)
    block = _sample(sch, "register_block", *k["register_block"], d)
    unroll_k = _sample(sch, "k_unroll", *k["k_unroll"], d)
    nbo, nbi = sch.split(nb, [None, block])
    rko, rki = sch.split(rk, [None, unroll_k])
    dot = plan.lanes == 1
    if "vector_width" in k and not dot:
        vo, vi = sch.split(v, [None, _sample(sch, "vector_width", *k["vector_width"], d)])
        sch.reorder(i, nbo, vo, rko, rki, u, nbi, vi)
    else:
        vi = v
        if dot:
            sch.reorder(i, nbo, rko, rki, nbi, v, u)
        else:
            sch.reorder(i, nbo, rko, rki, u, nbi, v)
    acc = sch.cache_write(dense, 0, "local")
    sch.reverse_compute_at(acc, nbo)
    sch.unroll(nbi)
    sch.unroll(rki)
    if dot:
        sch.vectorize(u)
    else:
        sch.vectorize(vi)
        sch.unroll(u)
    for loop in sch.get_loops(acc)[2:]:      # write-back: (nb, u, v) under nbo, vectorize the innermost
        sch.unroll(loop)
    sch.vectorize(sch.get_loops(acc)[-1])
    init = sch.decompose_reduction(dense, rko)
    init_loops = sch.get_loops(init)[2:]
    for loop in init_loops:
        sch.unroll(loop)
    if init_loops:
        sch.vectorize(init_loops[-1])
    if plan.offset_data or plan.padded_reduce != plan.reduce:
        sch.compute_at(sch.get_sblock("data_stage"), i)
    if plan.offset_data and _has_block(sch, "epilogue"):
        sch.compute_inline(sch.get_sblock("dense_unpack"))


def default_decisions(plan) -> dict:
    """``{knob: value}`` of the hand-written schedule (the initial point of ``design_space``)."""
    return {name: values[idx] for name, (values, idx) in knobs(plan).items()}


def decisions_of(trace, plan) -> dict:
    """``{knob: value}`` of a trace of ``design_space`` (its decisions are sampled in ``knobs`` order), and
    its sketch (loop order, epilogue placement)."""
    table = knobs(plan)
    values = [int(d) for d in trace.decisions.values()]
    out = {name: candidates[i] for (name, (candidates, _)), i in zip(table.items(), values)}
    insts = list(trace.insts)
    kinds = [str(i.kind.name) for i in insts]
    out["epilogue"] = "block" if kinds.count("ReverseComputeAt") > 1 else "registers"
    if kernel_kind(plan) != "dense":
        loops = insts[kinds.index("GetLoops")].outputs
        po = insts[kinds.index("Split")].outputs[0]
        ob = loops[1 if kernel_kind(plan) == "conv2d_vnni" else 2]
        order = list(insts[kinds.index("Reorder")].inputs)
        pos = [k for k, rv in enumerate(order) if rv.same_as(po)][0]
        chan = [k for k, rv in enumerate(order) if rv.same_as(ob)][0]
        out["loop_order"] = "positions" if pos < chan else "channels"
    return out
