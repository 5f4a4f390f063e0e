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
- structural alternatives, one design space each (``SKETCHES``): the loop order (``channels``: output-channel
  vectors outside the position blocks, as today, or ``positions``: position blocks outside), the epilogue
  placement (``registers``: requantized as the accumulators are written back, as today, or ``block``: after
  the block, as a separate vectorized pass), the spatial blocking (``flat``: ``R`` consecutive flattened
  positions, as today, or ``rows``: ``R`` columns of one output row) and the output-channel block of the VNNI
  kernels (1 as today, 2 or 3 16-channel vectors per register tile: one broadcast input word feeds that many
  ``vpdpbusd``; the register-block candidates shrink so the tile fits the 32 zmm registers).

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


def knobs(plan, spatial: str = "flat", oc_block: int = 1) -> dict:
    """``{knob: (candidates, index of the default schedule's value)}`` of a kernel's plan in one sketch
    (``spatial``/``oc_block``: see ``SKETCHES``, or ``vnni_sketches`` for the VNNI kernel; without them, the
    default sketch)."""
    kind = kernel_kind(plan)
    if kind == "conv2d_vnni":
        from .conv2d_vnni import default_knobs

        if (spatial, oc_block) == ("flat", 1):
            d = default_knobs(plan)
            spatial, oc_block = d.shape, d.vectors
        return {"register_block": vnni_blocks(plan, spatial, oc_block)}
    if kind == "dense":
        vb = plan.vector_blocks
        rk = plan.padded_reduce // plan.split
        out = {"register_block": _candidates(plan.block, _blocks(plan.block, vb)),
               "k_unroll": _candidates(1, _divisors(rk, 8))}
        if plan.lanes >= 8:
            out["vector_width"] = _candidates(plan.lanes, [plan.lanes // 2, plan.lanes])
        return out
    if spatial == "rows":       # a block of positions within one output row: divisors of its width
        blocks = [r for r in _divisors(plan.out_hw[1], 16) if r > 1]
        blocks = _candidates(blocks[-1], blocks)
    else:
        blocks = _candidates(plan.block, _blocks(plan.block, plan.padded_positions))
    unpack = _candidates(1, _divisors(plan.out_hw[1], 16))
    out = {"register_block": blocks,
           "k_unroll": _candidates(1, _divisors(plan.in_per_group, 4))}
    if plan.lanes >= 8:
        out["vector_width"] = _candidates(plan.lanes, [plan.lanes // 2, plan.lanes])
    out["unpack_vector"] = unpack
    return out


# ------------------------------------------------------------------------------------------ the VNNI kernel

VNNI_ACCUMULATORS = 24
"""zmm accumulators of a VNNI register tile (``vectors x R``; of 32 registers, the weight vectors and the
broadcast input take some more): 2 vectors x 14 (28) measured 3.5x slower than 2 x 7 on 14x14 maps (spills)."""


def vnni_sketches(plan) -> list:
    """``[(shape, vectors)]`` of the VNNI kernel's design spaces (``conv2d_vnni.Knobs``), the default first:
    ``flat`` and ``rows`` (where the padded positions are whole rows and some ``R > 1`` divides the width),
    1, 2 or 3 output vectors per tile (dividing the layer's vectors; 1 for int16 weights, whose lo/hi parts
    already double the tile)."""
    from .conv2d_vnni import LANES, default_knobs, weight_parts

    d = default_knobs(plan)
    vectors = [1] if weight_parts(plan) == 2 else \
        [v for v in (1, 2, 3) if -(-plan.out_channels // LANES) % v == 0]
    shapes = ["flat"]
    if plan.padded_positions % plan.out_hw[1] == 0 and [r for r in _divisors(plan.out_hw[1], 16) if r > 1]:
        shapes.append("rows")
    out = [(d.shape, d.vectors)]
    out += [(s, v) for s in shapes for v in vectors if (s, v) != out[0] and vnni_blocks(plan, s, v)[0]]
    return out


def vnni_blocks(plan, shape: str, vectors: int) -> tuple:
    """``(candidates, index of the default)`` of ``R`` in one sketch: divisors (> 1) of the padded positions
    (``flat``) or of the width (``rows``) up to 16, with ``vectors x R`` accumulators fitting the registers;
    the default knobs' ``R`` in the default sketch, else the largest."""
    from .conv2d_vnni import default_knobs, weight_parts

    d = default_knobs(plan)
    extent = plan.out_hw[1] if shape == "rows" else plan.padded_positions
    limit = VNNI_ACCUMULATORS // (vectors * weight_parts(plan))
    values = [r for r in _divisors(extent, 16) if (r > 1 or d.block == 1) and r <= limit]
    if (shape, vectors) == (d.shape, d.vectors):
        return _candidates(d.block, values)
    return (values, len(values) - 1) if values else ([], 0)


def _vnni_space(sch, plan, shape: str, vectors: int) -> None:
    """``conv2d_vnni.apply_schedule`` with ``R`` sampled, in one sketch (no annotation names the sketch: the
    default point is the default schedule, structurally; ``_vnni_decisions`` reads it from the splits)."""
    from .conv2d_vnni import Knobs, apply_schedule

    values, idx = vnni_blocks(plan, shape, vectors)
    block = sch.sample_categorical(values, [1.0 / len(values)] * len(values), decision=idx)
    apply_schedule(sch, plan, Knobs(block, vectors, shape))


SKETCHES = (("channels", "registers", "flat", 1), ("positions", "registers", "flat", 1),
            ("channels", "block", "flat", 1), ("channels", "registers", "rows", 1),
            ("channels", "block", "rows", 1))
"""(loop order, epilogue placement, spatial blocking, output-channel block) of the design spaces of the NCHW
kernels (``conv2d_int``; the VNNI kernel's are ``vnni_sketches``); the first is today's schedule.  Spatial
``flat`` blocks ``R`` consecutive flattened positions (``p = y*OW + x``, as today); ``rows`` splits the
positions into output rows first and blocks ``R`` columns of one row (the input address of a position is then
affine in the loop variables: no division by ``OW`` per position).  The output-channel block is 1 (kept in
the tuple: the records' sketch names have it)."""


def _sketch_applies(plan, kind: str, sketch) -> bool:
    order, epilogue, spatial, oc_block = sketch
    if kind == "dense":
        return sketch == SKETCHES[0]     # one row at batch 1; the epilogue already follows the k-split sum
    if spatial == "rows" and (plan.padded_positions % plan.out_hw[1]
                              or not [r for r in _divisors(plan.out_hw[1], 16) if r > 1]):
        return False
    return oc_block == 1


SKETCH_ATTR = "tvm_fxp.sketch"


def design_space(sch: Schedule):
    """MetaSchedule ``ScheduleFn`` body: one schedule per sketch of the workload in ``sch`` (which must carry
    ``PLAN_ATTR``), every knob sampled with the default schedule's value as its initial decision."""
    from . import conv2d_int, dense_int

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
    if kind == "conv2d_vnni":
        for shape, vectors in vnni_sketches(plan):
            s = sch.copy()
            s.seed(len(spaces) + 1)
            _vnni_space(s, plan, shape, vectors)
            spaces.append(s)
        return spaces
    for sketch in SKETCHES:
        if (sketch[1] == "block" and not has_epilogue) or not _sketch_applies(plan, kind, sketch):
            continue
        s = sch.copy()
        s.seed(len(spaces) + 1)
        if kind == "dense":
            _dense_space(s, plan, sketch[1])
        else:
            _conv_space(s, plan, sketch)
        spaces.append(s)
    return spaces


def _conv_space(sch, plan, sketch) -> None:
    """``conv2d_int.schedule_conv2d`` with sampled knobs, in one
    sketch of ``SKETCHES`` (annotated on the conv block as ``SKETCH_ATTR``, so reports can name it)."""
    from .common import has_block as _has_block

    order, epilogue, spatial, oc_block = sketch
    k = knobs(plan, spatial, oc_block)
    d: dict = {}
    conv = sch.get_sblock("conv")
    sch.annotate(conv, SKETCH_ATTR, "/".join(map(str, sketch)))
    block = _sample(sch, "register_block", *k["register_block"], d)
    unroll_k = _sample(sch, "k_unroll", *k["k_unroll"], d)
    n, g, ob, p, v, ri, rky, rkx = sch.get_loops(conv)
    outer = [n, g]
    if spatial == "rows":
        y, x = sch.split(p, [None, plan.out_hw[1]])
        po, pi = sch.split(x, [None, block])
        positions = [y, po]
    else:
        po, pi = sch.split(p, [None, block])
        positions = [po]
    rio, rii = sch.split(ri, [None, unroll_k])
    if "vector_width" in k:
        vo, vi = sch.split(v, [None, _sample(sch, "vector_width", *k["vector_width"], d)])
        lane_tiles = [vo]
    else:
        vi, lane_tiles = v, []
    blocks = [ob, *positions] if order == "channels" else [*positions, ob]
    sch.reorder(*outer, *blocks, *lane_tiles, rio, rky, rkx, rii, pi, vi)
    anchor = blocks[-1]
    acc = sch.cache_write(conv, 0, "local")
    sch.reverse_compute_at(acc, anchor)
    if _has_block(sch, "epilogue"):
        epi = sch.get_sblock("epilogue")
        if epilogue == "registers":
            sch.reverse_compute_inline(epi)
        else:
            sch.reverse_compute_at(epi, anchor)
            sch.vectorize(sch.get_loops(epi)[-1])
    sch.vectorize(vi)
    sch.unroll(pi)
    sch.unroll(rii)
    if plan.kernel[1] <= 7:
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
    pad = sch.get_sblock("data_pad" if plan.layout == "channels" else "data_pack")
    sch.compute_at(pad, n)
    if plan.layout == "groups":
        sch.vectorize(sch.get_loops(pad)[-1])


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
    out = {name: values[idx] for name, (values, idx) in knobs(plan).items()}
    if kernel_kind(plan) == "conv2d_vnni":
        from .conv2d_vnni import default_knobs

        d = default_knobs(plan)
        out.update(spatial=d.shape, oc_block=d.vectors)
    return out


def _vnni_decisions(trace, plan) -> dict:
    """``{register_block, spatial, oc_block}`` of a trace of ``_vnni_space``: ``R`` is its one decision; the
    first split (the positions) has a constant factor, the width, in the ``rows`` sketch; a later constant
    split is the output vectors' (int8 weights; int16 weights split their lo/hi parts there)."""
    from tvm import tirx

    from .conv2d_vnni import weight_parts

    insts = list(trace.insts)
    block = next(int(trace.get_decision(i)) for i in insts if str(i.kind.name) == "SampleCategorical")
    splits = [[f for f in i.inputs[1:] if isinstance(f, tirx.IntImm)] for i in insts if str(i.kind.name) == "Split"]
    spatial = "rows" if splits[0] else "flat"
    later = [int(f[0]) for f in splits[1 + (spatial == "rows"):] if f]     # then tile_unpack's (16 lanes)
    oc_block = later[0] if later and later[0] in (2, 3) and weight_parts(plan) == 1 else 1
    values, _ = vnni_blocks(plan, spatial, oc_block)
    return {"register_block": values[block], "spatial": spatial, "oc_block": oc_block}


def decisions_of(trace, plan) -> dict:
    """``{knob: value}`` of a trace of ``design_space`` (its decisions are sampled in ``knobs`` order), and
    its sketch (loop order, epilogue placement, spatial blocking, output-channel block)."""
    insts = list(trace.insts)
    kinds = [str(i.kind.name) for i in insts]
    if kernel_kind(plan) == "dense":
        table = knobs(plan)
        values = [int(d) for d in trace.decisions.values()]
        out = {name: candidates[i] for (name, (candidates, _)), i in zip(table.items(), values)}
        out["epilogue"] = "block" if kinds.count("ReverseComputeAt") > 1 else "registers"
        return out
    if kernel_kind(plan) == "conv2d_vnni":
        return _vnni_decisions(trace, plan)
    sketch = next(str(i.inputs[1]).strip('"') for i in insts
                  if str(i.kind.name) == "Annotate" and str(i.attrs[0]) == SKETCH_ATTR)
    order, epilogue, spatial, oc_block = sketch.split("/")
    table = knobs(plan, spatial, int(oc_block))
    values = [int(d) for d in trace.decisions.values()]
    out = {name: candidates[i] for (name, (candidates, _)), i in zip(table.items(), values)}
    out.update(loop_order=order, epilogue=epilogue, spatial=spatial, oc_block=int(oc_block))
    return out
