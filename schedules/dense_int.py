"""int8/uint8 x int8 matmul ``(M, K) @ (K, N)`` with int16 or int32 accumulators, for NEON and AVX.

The desc: ``out[m, n] = sum_k acc(a[m, k]) * acc(b[k, n])``.  ``b`` (the weights) is packed to
``(NB, K', L)`` (``N`` zero-padded to ``NB * L``, ``K`` to ``K'``), one ``a[m, k]`` is broadcast against ``L``
outputs, and ``R`` vectors of outputs are register-blocked so that one broadcast feeds ``R`` weight vectors.
``M`` (the batch) may be symbolic.  On NEON with int16 accumulators each step is one ``ld1r``, ``R`` weight
loads and ``2R`` ``smlal``/``smlal2`` into ``.8h``.

A layer with few output vectors has too few accumulator registers to hide the multiply-accumulate latency,
so the reduction is split ``U`` ways (``k = k_outer * U + u``) into independent partial sums that the
unpacking step adds up; ``K`` is zero-padded to a multiple of ``U``.  With fewer outputs than one vector
(``fmnist``'s last layer has 10) the vector runs over ``u`` instead (``L = 1``, ``U`` = a full vector): a
dot-product layout where one loaded data vector feeds every output's ``smlal``/``smlal2`` and no lane is
padding.

uint8 data into int16 accumulators runs on ``a - 128`` and adds ``128 * sum_k b[k, n]`` back, exact modulo
``2**16`` as explained in ``conv2d_int``.
"""

from __future__ import annotations

from dataclasses import dataclass

import tvm
from tvm import te, tirx
from tvm.s_tir import Schedule

from .common import ceil_div as _ceil_div, has_block as _has_block
from .conv2d_int import EXACT_FLOAT, check_dtypes
from .epilogue import const_placeholders
from .targets import KernelConfig, kernel_config

MIN_CHAINS = 8   # independent accumulator registers needed to cover the multiply-accumulate latency


@dataclass(frozen=True)
class DensePlan:
    """Static shape and blocking of one matmul kernel (``M`` may be symbolic)."""

    reduce: int          # K
    outputs: int         # N
    data_dtype: str
    acc_dtype: str
    lanes: int           # L
    block: int           # R: output vectors per register block
    split: int = 1       # U: independent partial sums over k
    weight_dtype: str = "int8"

    @property
    def offset_data(self) -> bool:
        """As ``Conv2dPlan.offset_data`` (not with int16 weights)."""
        return self.data_dtype == "uint8" and self.acc_dtype == "int16" and self.weight_dtype == "int8"

    @property
    def offset_dtype(self) -> str:
        return self.acc_dtype

    @property
    def vector_blocks(self) -> int:
        """NB: output vectors after padding ``N`` up to a multiple of ``L * R``."""
        return _ceil_div(_ceil_div(self.outputs, self.lanes), self.block) * self.block

    @property
    def padded_reduce(self) -> int:
        return _ceil_div(self.reduce, self.split) * self.split

    @property
    def packed_weight_shape(self) -> tuple:
        return (self.vector_blocks, self.padded_reduce, self.lanes)

    @property
    def macs_per_row(self) -> int:
        return self.reduce * self.outputs


def plan_dense(a_shape, b_shape, data_dtype: str, acc_dtype: str, config: KernelConfig | None = None,
               target=None, weight_dtype: str = "int8") -> DensePlan:
    """Check ``(M, K) @ (K, N)`` operands and choose block and split for ``config`` (or the target's)."""
    check_dtypes("matmul", data_dtype, weight_dtype, acc_dtype)
    if config is None:
        config = kernel_config(target or tvm.target.Target.current(), acc_dtype)
    k, n = int(b_shape[0]), int(b_shape[1])
    if len(a_shape) != 2 or int(a_shape[1]) != k:
        raise ValueError(f"matmul: {tuple(a_shape)} @ {tuple(b_shape)} is not (M, K) @ (K, N)")
    regs_per_vector = max(1, config.lanes * tvm.DataType(acc_dtype).bits // 128)
    if n < config.lanes and k >= config.lanes:      # dot-product layout: vectors run over k
        limit = max(1, 3 * config.max_block // 2)   # accumulators may take 3/4 of the register file here
        block = max(r for r in range(1, min(limit, n) + 1) if n % r == 0)
        return DensePlan(k, n, data_dtype, acc_dtype, 1, block, config.lanes, weight_dtype)
    vectors = _ceil_div(n, config.lanes)
    # one weight vector per output vector per k: block as many as fit (>= 1), preferring exact divisors
    block = max(r for r in range(1, min(config.max_block, vectors) + 1) if vectors % r == 0)
    split = max(1, min(k, _ceil_div(MIN_CHAINS, block * regs_per_vector)))
    return DensePlan(k, n, data_dtype, acc_dtype, config.lanes, block, split, weight_dtype)


def pack_weight(b: te.Tensor, plan: DensePlan) -> te.Tensor:
    lanes, n, k, zero = plan.lanes, plan.outputs, plan.reduce, tirx.const(0, b.dtype)
    return te.compute(plan.packed_weight_shape, lambda nb, j, v: tirx.if_then_else(
        tirx.all(nb * lanes + v < n, j < k), b[tirx.min(j, k - 1), tirx.min(nb * lanes + v, n - 1)], zero),
        name="weight_pack")


def weight_offset(b: te.Tensor, plan: DensePlan) -> te.Tensor:
    """``128 * sum_k b[k, n]`` wrapped to int16 (for ``plan.offset_data``)."""
    rk = te.reduce_axis((0, plan.reduce), "rk")
    total = te.compute((plan.outputs,), lambda j: te.sum(b[rk, j].astype(plan.acc_dtype), axis=rk),
                       name="weight_sum")
    return te.compute((plan.outputs,), lambda j: total[j] * tirx.const(128, plan.acc_dtype), name="weight_offset")


def dense_compute(a: te.Tensor, packed: te.Tensor, plan: DensePlan, offset: te.Tensor | None = None,
                  epilogue=None, params=()) -> te.Tensor:
    """``(M, K)`` data x packed weights -> ``(M, N)`` accumulators; ``offset`` exactly when ``plan.offset_data``.

    With an ``epilogue`` (``epilogue.Epilogue``, its per-output constants in ``params``) the result is the
    epilogue of the accumulators (one more elementwise stage, ``epilogue``)."""
    if plan.offset_data != (offset is not None):
        raise ValueError("dense_compute: pass weight_offset exactly for uint8 data into int16")
    m, acc, lanes, split, k = a.shape[0], plan.acc_dtype, plan.lanes, plan.split, plan.reduce
    if plan.offset_data or plan.padded_reduce != k:
        stored_dtype = "int8" if plan.offset_data else plan.data_dtype

        def stored(i, j):
            value = a[i, tirx.min(j, k - 1)]
            if plan.offset_data:
                value = (value.astype("int16") - tirx.const(128, "int16")).astype("int8")
            return tirx.if_then_else(j < k, value, tirx.const(0, stored_dtype))
        a = te.compute((m, plan.padded_reduce), stored, name="data_stage")
    rk = te.reduce_axis((0, plan.padded_reduce // split), "rk")
    part = te.compute((m, plan.vector_blocks, split, lanes), lambda i, nb, u, v: te.sum(
        a[i, rk * split + u].astype(acc) * packed[nb, rk * split + u, v].astype(acc), axis=rk), name="dense")
    ru = te.reduce_axis((0, split), "ru")
    total = te.compute((m, plan.outputs), lambda i, j: te.sum(part[i, j // lanes, ru, j % lanes], axis=ru),
                       name="dense_sum")
    if offset is not None:
        total = te.compute((m, plan.outputs), lambda i, j: total[i, j] + offset[j], name="dense_unpack")
    if epilogue is None:
        return total
    return te.compute((m, plan.outputs), lambda i, j: epilogue.apply(total[i, j], j, params), name="epilogue")


def _loops_below(sch, block, anchor, dims: list, extents: dict) -> dict:
    """``{dim: loop}`` for the loops of ``block`` under ``anchor``, given in ``dims`` order, matched by extent
    (a dim of extent 1 may have no loop)."""
    loops = sch.get_loops(block)
    anchor_for = sch.get(anchor)
    start = next(i for i, lp in enumerate(loops) if sch.get(lp).same_as(anchor_for)) + 1
    inner, found = loops[start:], {}
    for dim in dims:
        if len(found) < len(inner) and int(sch.get(inner[len(found)]).extent) == extents[dim]:
            found[dim] = inner[len(found)]
        elif extents[dim] != 1:
            raise RuntimeError(f"dense schedule: no loop of extent {extents[dim]} for {dim}")
    if len(found) != len(inner):
        raise RuntimeError(f"dense schedule: unexpected loops under the block loop ({len(inner)} for {dims})")
    return found


def schedule_dense(func: tirx.PrimFunc, plan: DensePlan) -> tirx.PrimFunc:
    sch = Schedule(func)
    dense = sch.get_sblock("dense")
    i, nb, u, v, rk = sch.get_loops(dense)
    nbo, nbi = sch.split(nb, [None, plan.block])
    sch.reorder(i, nbo, rk, u, nbi, v)
    dot = plan.lanes == 1                   # dot-product layout: the vector runs over u
    if dot:
        sch.reorder(i, nbo, rk, nbi, v, u)
    acc = sch.cache_write(dense, 0, "local")
    sch.reverse_compute_at(acc, nbo)
    sch.unroll(nbi)
    if dot:
        sch.vectorize(u)
    else:
        sch.vectorize(v)
        sch.unroll(u)
    # write-back loops follow the buffer (nb, u, v); init loops the update's order
    extents = {"nb": plan.block, "u": plan.split, "v": plan.lanes}
    back = _loops_below(sch, acc, nbo, ["nb", "u", "v"], extents)
    if plan.acc_dtype == EXACT_FLOAT:
        sch.parallel(i)     # as conv2d_int: the simulation's many-image calls
    init = sch.decompose_reduction(dense, rk)
    first = _loops_below(sch, init, nbo, ["nb", "v", "u"] if dot else ["u", "nb", "v"], extents)
    for loops in (back, first):
        for dim, loop in loops.items():
            if dim == ("u" if dot else "v"):
                sch.vectorize(loop)
            else:
                sch.unroll(loop)
    if plan.offset_data or plan.padded_reduce != plan.reduce:
        sch.compute_at(sch.get_sblock("data_stage"), i)
    if plan.offset_data and _has_block(sch, "epilogue"):
        sch.compute_inline(sch.get_sblock("dense_unpack"))
    return sch.mod["main"]


def dense_primfuncs(plan: DensePlan, rows=None, epilogue=None) -> tuple:
    """``(weight_pack, weight_offset or None, dense)`` PrimFuncs; ``rows`` an int or None (symbolic ``m``).

    The dense PrimFunc takes ``(data, packed_weight, [offset,] out)``; with an ``epilogue``
    (``epilogue.Epilogue``) ``(data, packed_weight, [offset,] *epilogue constants, out)``, ``out`` being the
    epilogue's result.
    """
    if getattr(plan, "layout", None) == "bitserial":  # bitserial.BitserialPlan (legalize.dense_plan_for)
        from .bitserial import bitserial_primfuncs
        return bitserial_primfuncs(plan, rows, epilogue)
    if getattr(plan, "layout", None) == "paired":     # paired_int32.PairedPlan (legalize.dense_plan_for)
        from .paired_int32 import paired_primfuncs
        return paired_primfuncs(plan, tirx.Var("m", "int64") if rows is None else rows, epilogue=epilogue)
    rows = tirx.Var("m", "int64") if rows is None else rows
    b = te.placeholder((plan.reduce, plan.outputs), plan.weight_dtype, name="weight")
    pack_func = te.create_prim_func([b, pack_weight(b, plan)], "int64")
    a = te.placeholder((rows, plan.reduce), plan.data_dtype, name="data")
    packed = te.placeholder(plan.packed_weight_shape, plan.weight_dtype, name="weight_packed")
    params, offset, offset_func = [a, packed], None, None
    if plan.offset_data:
        offset_func = te.create_prim_func([b, weight_offset(b, plan)], "int64")
        offset = te.placeholder((plan.outputs,), plan.acc_dtype, name="weight_offset")
        params.append(offset)
    consts = const_placeholders(epilogue)
    out = dense_compute(a, packed, plan, offset, epilogue, consts)
    from .tuned import schedule_kernel   # the tuned schedule when a tuning database is in scope

    return pack_func, offset_func, schedule_kernel(te.create_prim_func([*params, *consts, out], "int64"), plan,
                                                   schedule_dense)
