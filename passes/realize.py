"""Realize: turn an annotated module into an integer-only graph.

Runs on an annotated module (after ``Annotate``), instead of ``Simulate``.  The result computes exactly what
``Simulate`` computes, in integers:

- the input quantize (float64 ``clip(round_half_away(x * 2**f))``, the same expression as the simulation)
  and the output dequantize (``q * 2**-f`` in float32) are the only float ops;
- weights and biases become int8/int16 constants; conv2d/matmul accumulate in an explicit dtype, int32 when
  the layer's proven bound fits (``tvm_fxp.bounds``) and int64 otherwise;
- the bias is shifted left to the accumulator scale ``f_x + f_w`` and added in the accumulator;
- relu/clip act on the accumulator (they commute with requantize);
- requantize = rounding right shift (half away from zero: ``(acc + 2**(s-1) - [acc<0]) >> s``) or
  saturating left shift, then saturate to the format and narrow to its storage dtype;
- residual adds and concats align their operands to the finest input scale by left shifts;
- average pools sum in integers and multiply by ``m`` (``m / 2**s ~ 1/count``), then requantize.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tvm
from tvm import relax

from tvm_fxp.bounds import (INT32_LIMIT, AccumulatorBound, bias_at_accumulator, pool_multiplier,
                            weight_l1_per_channel)
from tvm_fxp.formats import FixedPointFormat

from ._arith import emit_pool_sum, emit_round_clip, fconst, pool_count, rebuild_weighted
from ._ir import FxpGraphError, const_np, consumers, is_const, main_bindings, map_relax_functions, op_name, \
    rebuild_function
from .ops import annotation_format, is_annotate

_LAYOUT_OPS = {"relax.nn.max_pool2d", "relax.reshape", "relax.flatten", "relax.permute_dims",
               "relax.squeeze", "relax.expand_dims"}


@dataclass
class Dom:
    """Where a value lives: float, stored integers of a format (q), or an accumulator at scale ``frac``."""

    kind: str                      # float | q | acc
    frac: np.ndarray               # 0-D, or broadcast-shaped per channel
    dtype: str
    fmt: FixedPointFormat | None = None
    value: np.ndarray | None = None  # stored integers of an annotated constant


def _iconst(v, dtype):
    return relax.const(np.asarray(v).astype(dtype), dtype)


INT16_LIMIT = 1 << 15


def _acc_dtype(bound: int, where: str, narrow: bool = False) -> str:
    """The accumulator dtype a proven magnitude ``bound`` allows (int16 only when ``narrow``)."""
    if bound >= 1 << 52:
        raise FxpGraphError(f"{where}: accumulator bound 2**{int(np.log2(bound))} exceeds 52 bits")
    if narrow and bound < INT16_LIMIT:
        return "int16"
    return "int32" if bound < INT32_LIMIT else "int64"


def emit_requantize(bb, x, dom: Dom, fmt: FixedPointFormat, name: str):
    """Accumulator (or stored integers) at ``dom.frac`` -> stored integers of ``fmt``."""
    shift = np.asarray(dom.frac, dtype=np.int64) - fmt.frac
    dtype = dom.dtype
    if dtype not in ("int32", "int64"):  # stored integers or an int16 accumulator: widen for the rounding
        dtype = "int32"
        x = bb.emit(relax.op.astype(x, dtype), f"{name}_wide")
    rs, ls = np.maximum(shift, 0), np.maximum(-shift, 0)
    t = x
    if np.any(rs > 0):
        half = np.where(rs > 0, np.left_shift(1, np.maximum(rs - 1, 0)), 0)
        neg = bb.emit(relax.op.astype(relax.op.less(t, _iconst(0, dtype)), dtype), f"{name}_neg")
        if not np.all(rs > 0):
            neg = bb.emit(relax.op.multiply(neg, _iconst(rs > 0, dtype)), f"{name}_negm")
        t = bb.emit(relax.op.subtract(relax.op.add(t, _iconst(half, dtype)), neg), f"{name}_biased")
        t = bb.emit(relax.op.right_shift(t, _iconst(rs, dtype)), f"{name}_shr")
    if np.any(ls > 0):
        lo = -((-fmt.qmin) >> ls)                       # floor(qmin / 2**ls)
        hi = -((-fmt.qmax) >> ls)                        # ceil(qmax / 2**ls)
        t = bb.emit(relax.op.minimum(relax.op.maximum(t, _iconst(lo, dtype)), _iconst(hi, dtype)), f"{name}_pre")
        t = bb.emit(relax.op.left_shift(t, _iconst(ls, dtype)), f"{name}_shl")
    t = bb.emit(relax.op.clip(t, fmt.qmin, fmt.qmax), f"{name}_sat")
    return relax.op.astype(t, fmt.storage_dtype)


def _channel_frac(frac: np.ndarray, out_ndim: int, axis: int) -> np.ndarray:
    frac = np.asarray(frac, dtype=np.int64)
    if frac.ndim == 0 or frac.size == 1:
        return frac.reshape(())
    shape = [1] * out_ndim
    shape[axis % out_ndim] = frac.size
    return frac.reshape(shape)


def realize_function(func: relax.Function, accumulator: str = "wide") -> relax.Function:
    dom: dict = {}
    users = consumers(func)
    # the bias annotation that follows each weighted op, for the accumulator bound at the op itself
    bias_of: dict = {}
    annotated_const: dict = {}
    for b in main_bindings(func):
        if is_annotate(b.value) and is_const(b.value.args[0]):
            annotated_const[b.var] = b.value
    for b in main_bindings(func):
        if op_name(b.value) in ("relax.nn.conv2d", "relax.matmul"):
            us = users.get(b.var, [])
            if len(us) == 1 and op_name(us[0].value) == "relax.add" and us[0].value.args[1] in annotated_const:
                bias_of[b.var] = annotated_const[us[0].value.args[1]]

    for p in func.params:
        dom[p] = Dom("float", np.asarray(0), str(p.ty.dtype))

    def dom_of(arg, where):
        if is_const(arg) or arg not in dom:
            raise FxpGraphError(f"{where}: operand is not produced by an annotated tensor; run Annotate first")
        return dom[arg]

    def rule(bb, b, value, env):
        orig = b.value
        name = op_name(orig)
        where = f"node {b.var.name} ({name})"
        if isinstance(orig, relax.Var):            # an alias binding
            dom[b.var] = dom_of(orig, where)
            return value
        if is_annotate(orig):
            fmt, key = annotation_format(orig)
            x = orig.args[0]
            if is_const(x):
                q = fmt.quantize(const_np(x))
                dom[b.var] = Dom("q", np.asarray(fmt.frac_list), fmt.storage_dtype, fmt, q)
                return relax.const(q.astype(fmt.storage_dtype), fmt.storage_dtype)
            d = dom_of(x, where)
            if fmt.per_channel:
                raise FxpGraphError(f"{key}: activations take per-tensor formats only")
            dom[b.var] = Dom("q", np.asarray(fmt.frac), fmt.storage_dtype, fmt)
            if d.kind == "float":  # the input quantize: same float64 expression as the simulation
                x64 = bb.emit(relax.op.astype(value.args[0], "float64"), f"{b.var.name}_f64")
                q = emit_round_clip(bb, x64, fmt, fmt.frac, b.var.name)
                return relax.op.astype(q, fmt.storage_dtype)
            return emit_requantize(bb, value.args[0], d, fmt, b.var.name)

        if name in ("relax.nn.conv2d", "relax.matmul"):
            dx, dw = dom_of(orig.args[0], where), dom_of(orig.args[1], where)
            if dx.kind != "q" or dw.kind != "q" or dw.value is None:
                raise FxpGraphError(f"{where}: needs an annotated input and annotated constant weights")
            w_axis = 0 if name == "relax.nn.conv2d" else 1
            fan_in = dw.value.size // dw.value.shape[w_axis]
            acc_frac = dx.fmt.frac + np.asarray(dw.fmt.frac_list, dtype=np.int64)
            l1 = dx.fmt.max_abs_q * weight_l1_per_channel(dw.value, w_axis)
            worst = dx.fmt.max_abs_q * dw.fmt.max_abs_q * fan_in
            if b.var in bias_of:
                bfmt, _ = annotation_format(bias_of[b.var])
                bq = bfmt.quantize(const_np(bias_of[b.var].args[0]))
                bacc = np.abs(bias_at_accumulator(bq.reshape(-1), bfmt,
                                                  np.broadcast_to(acc_frac, (bq.size,))))
                l1 = l1 + bacc
                worst = worst + int(bacc.max(initial=0))
            dtype = _acc_dtype(min(int(np.max(l1)), worst), where, narrow=accumulator == "narrow")
            out_ndim = len(orig.ty.shape)
            dom[b.var] = Dom("acc", _channel_frac(acc_frac, out_ndim, 1 if w_axis == 0 else -1), dtype)
            return rebuild_weighted(orig, value.args[0], value.args[1], dtype)

        if name == "relax.add":
            d0, d1 = dom_of(orig.args[0], where), dom_of(orig.args[1], where)
            if d0.kind == "acc" and d1.kind == "q" and d1.value is not None:   # bias at accumulator scale
                channel_frac = np.asarray(d0.frac, dtype=np.int64)
                flat = np.broadcast_to(channel_frac.reshape(-1), (d1.value.size,))
                bacc = bias_at_accumulator(d1.value.reshape(-1), d1.fmt, flat)
                dom[b.var] = d0
                return relax.op.add(value.args[0], _iconst(bacc.reshape([int(s) for s in orig.args[1].ty.shape]), d0.dtype))
            if d0.kind == "q" and d1.kind == "q":
                return _aligned(bb, b, [value.args[0], value.args[1]], [d0, d1], relax.op.add, dom, where, True)
            raise FxpGraphError(f"{where}: add operands must both be annotated tensors")

        if name == "relax.concat":
            ds = [dom_of(a, where) for a in orig.args[0].fields]
            if any(d.kind != "q" for d in ds):
                raise FxpGraphError(f"{where}: concat operands must be annotated tensors")
            axis = int(orig.attrs.axis)
            return _aligned(bb, b, list(value.args[0].fields), ds,
                            lambda *xs: relax.op.concat(xs, axis=axis), dom, where, False)

        if name in ("relax.mean", "relax.nn.avg_pool2d"):
            d = dom_of(orig.args[0], where)
            count = pool_count(orig)
            m, s = pool_multiplier(count)
            dtype = _acc_dtype(d.fmt.max_abs_q * count * m, where)
            x = bb.emit(relax.op.astype(value.args[0], dtype), f"{b.var.name}_wide")
            total, s = emit_pool_sum(bb, orig, x, dtype, b.var.name)
            dom[b.var] = Dom("acc", np.asarray(d.fmt.frac + s), dtype)
            return total

        if name == "relax.nn.relu":
            dom[b.var] = dom_of(orig.args[0], where)
            return value

        if name == "relax.clip":
            d = dom_of(orig.args[0], where)
            dom[b.var] = d
            lo, hi = float(orig.args[1].value), float(orig.args[2].value)
            frac = np.asarray(d.frac, dtype=np.int64)
            info = np.iinfo(d.dtype)
            out = value.args[0]
            for bound, pick, limit in ((lo, relax.op.maximum, info.min), (hi, relax.op.minimum, info.max)):
                if not np.isfinite(bound):
                    continue
                scaled = np.ldexp(bound, frac)
                if np.any(scaled != np.round(scaled)):
                    raise FxpGraphError(f"{where}: clip bound {bound} is not representable at scale "
                                        f"2**-{int(frac.min())}; give this tensor more fractional bits")
                scaled = np.clip(scaled, float(info.min), float(info.max))
                ints = np.where(np.abs(scaled) >= 2.0 ** 62, limit, scaled).astype(np.int64)
                out = bb.emit(pick(out, _iconst(ints, d.dtype)), f"{b.var.name}_clip")
            return out

        if name in _LAYOUT_OPS:
            dom[b.var] = dom_of(orig.args[0], where)
            return value

        raise FxpGraphError(f"{where}: op {name} cannot be realized in integers")

    def epilogue(bb, result, env):
        d = dom[func.body.body]
        if d.kind != "q":
            raise FxpGraphError("the function result is not an annotated tensor")
        out = bb.emit(relax.op.astype(result, "float32"), "deq_int")
        return bb.emit(relax.op.multiply(out, fconst(np.ldexp(1.0, -d.fmt.frac), "float32")), "dequantize")

    return rebuild_function(func, rule, epilogue=epilogue)


def _aligned(bb, b, xs, ds, combine, dom, where, summed):
    """Shift operands left to the finest scale among them, then add/concat in the accumulator dtype."""
    fmts = [d.fmt for d in ds]
    acc_frac = max(f.frac for f in fmts)
    mags = [f.max_abs_q << (acc_frac - f.frac) for f in fmts]
    dtype = _acc_dtype(sum(mags) if summed else max(mags), where)
    aligned = []
    for i, (x, f) in enumerate(zip(xs, fmts)):
        t = bb.emit(relax.op.astype(x, dtype), f"{b.var.name}_in{i}")
        if acc_frac != f.frac:
            t = bb.emit(relax.op.left_shift(t, _iconst(acc_frac - f.frac, dtype)), f"{b.var.name}_al{i}")
        aligned.append(t)
    dom[b.var] = Dom("acc", np.asarray(acc_frac), dtype)
    return combine(*aligned)


@tvm.transform.module_pass(opt_level=0, name="tvm_fxp.Realize")
class Realize:
    """Lower the annotated ``main`` to an integer-only graph (float only at input quantize/output dequantize).

    Parameters
    ----------
    accumulator : str
        ``"wide"`` (default): conv2d/matmul accumulate in int32, or int64 when the proof needs more.
        ``"narrow"``: int16 wherever the layer's proven bound (L1 or worst case, bias included) is below
        ``2**15``, so 16-bit-accumulator kernels can be used; other layers as ``"wide"``.
    """

    def __init__(self, accumulator: str = "wide"):
        if accumulator not in ("wide", "narrow"):
            raise ValueError(f"accumulator must be 'wide' or 'narrow', got {accumulator!r}")
        self.accumulator = accumulator

    def transform_module(self, mod: tvm.IRModule, ctx) -> tvm.IRModule:
        mod = map_relax_functions(
            mod, lambda f, name: realize_function(f, self.accumulator) if name == "main" else f)
        return relax.transform.DeadCodeElimination()(mod)
