"""Realize: turn an annotated module into an integer-only graph.

Runs on an annotated module (after ``Annotate``), instead of ``Simulate``.  The result computes exactly what
``Simulate`` computes, in integers:

- the input quantize (float64 ``clip(round_half_away(x * 2**f))``, the same expression as the simulation)
  and the output dequantize (``q * 2**-f`` in float32) are the only float ops, apart from a softmax
  epilogue after the dequantize (the same float32 softmax as the simulation's);
- weights and biases become int8/int16 constants; conv2d/matmul accumulate in an explicit dtype, int32 when
  the layer's proven bound fits (``tvm_fxp.bounds``) and int64 otherwise;
- the bias is shifted left to the accumulator scale ``f_x + f_w`` and added in the accumulator;
- relu/clip act on the accumulator (they commute with requantize); a clip bound that is not a multiple of
  the accumulator's step is reached by shifting the accumulator left first (exact);
- requantize = rounding right shift (half away from zero: ``(acc + 2**(s-1) - [acc<0]) >> s``) or
  saturating left shift, then saturate to the format and narrow to its storage dtype;
- residual adds (n-ary) and concats align their operands to the finest input scale by left shifts;
- average pools sum in integers and multiply by ``m`` (``m / 2**s ~ 1/count``, per position when the window
  count varies), then requantize;
- the product of two activations is ``qa * qb`` at ``2**-(fa + fb)``;
- LRN is ``q * T[s >> r]`` with ``s`` the integer window sum of ``q**2`` and ``T`` a table of
  ``2**K * (bias + alpha/size * S)**-beta`` (``tvm_fxp.bounds.lrn_table``);
- elementwise functions of one activation (sigmoid, tanh, SiLU, Mish, GELU, ...) are ``T[(q - qmin) >> r]``, a
  table over the input's stored integers (``table.py``);
- slices, zero/edge/reflect pads and nearest resizes select stored integers; max/min align their operands like a
  concat, then compare;
- linear resizes (any scale or coordinate mode the conv2d form of ``Prepare`` does not take) interpolate two
  gathered integers per axis with weights at ``2**-11`` (``resize.py``).

Each op's rule is one function registered in ``RULES``; every rule records the domain of its result (``Dom``:
stored integers of a format, or an accumulator at a scale with a proven magnitude bound).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np
import tvm
from tvm import relax
from tvm.relax.expr_functor import PyExprMutator, mutator

from tvm_fxp.bounds import (INT16_LIMIT, AccumulatorError, accumulator_dtype, bias_at_accumulator, k_tiles,
                            lrn_arithmetic, mul_arithmetic, pool_multiplier, weighted_layer_bound)
from tvm_fxp.formats import FixedPointFormat

from .emitters import emit_lrn_lookup, emit_pool_sum, emit_round_clip, fconst, pool_count, rebuild_weighted, \
    saturate
from .relax_utils import FxpGraphError, const_np, consumers, is_const, main_bindings, map_relax_functions, op_name, \
    rebind, static_shape
from .analysis import EPILOGUE, FLOAT_ISLAND_OPS, LrnMatch, composite_patterns, result_fields
from .annotate import CLAIMS_ATTR, TILE_CLAIMS_ATTR
from .ops import annotation_format, is_annotate
from .simulate import map_result

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
    bound: int = 0                 # proven max |value| (integer units at ``frac``)
    key: str | None = None         # plan key of an annotated tensor


def _q_dom(fmt: FixedPointFormat, value=None) -> Dom:
    frac = np.asarray(fmt.frac_list if value is not None else fmt.frac)
    return Dom("q", frac, fmt.storage_dtype, fmt, value, fmt.max_abs_q)


def _iconst(v, dtype):
    return relax.const(np.asarray(v).astype(dtype), dtype)


def _acc_dtype(bound: int, where: str, narrow: bool = False) -> str:
    """``tvm_fxp.bounds.accumulator_dtype`` of a proven magnitude ``bound``, its refusal naming the node."""
    try:
        return accumulator_dtype(bound, "narrow" if narrow else "wide")
    except AccumulatorError as e:
        raise FxpGraphError(f"{where}: {e}") from None


def emit_requantize(bb, x, dom: Dom, fmt: FixedPointFormat, name: str):
    """Accumulator (or stored integers) at ``dom.frac`` -> stored integers of ``fmt``.

    Shift amounts are capped below the dtype width without changing the result: the proven bounds keep
    ``|acc| < 2**30`` in int32 and ``< 2**52`` in int64, so a right shift by 31 (int32) or 62 (int64) already
    rounds every value to 0, as any larger shift does; after the pre-clip, a left shift by ``fmt.bits`` already
    saturates every nonzero value, as any larger shift does.
    """
    shift = np.asarray(dom.frac, dtype=np.int64) - fmt.frac
    dtype = dom.dtype
    if dtype not in ("int32", "int64"):  # stored integers or an int16 accumulator: widen for the rounding
        dtype = "int32"
        x = bb.emit(relax.op.astype(x, dtype), f"{name}_wide")
    if dtype == "int32" and fmt.bits > 29 and np.any(shift < 0):
        dtype = "int64"
        x = bb.emit(relax.op.astype(x, dtype), f"{name}_wide64")
    width = 32 if dtype == "int32" else 64
    rs, ls = np.minimum(np.maximum(shift, 0), width - 2 + (width == 32)), np.minimum(np.maximum(-shift, 0), fmt.bits)
    t = x
    if np.any(rs > 0):
        half = np.where(rs > 0, np.left_shift(1, np.maximum(rs - 1, 0)), 0)
        neg = bb.emit(relax.op.astype(relax.op.less(t, _iconst(0, dtype)), dtype), f"{name}_neg")
        if not np.all(rs > 0):
            neg = bb.emit(relax.op.multiply(neg, _iconst(rs > 0, dtype)), f"{name}_negm")
        t = bb.emit(relax.op.subtract(relax.op.add(t, _iconst(half, dtype)), neg), f"{name}_biased")
        t = bb.emit(relax.op.right_shift(t, _iconst(rs, dtype)), f"{name}_shr")
    if np.any(ls > 0):
        lo = fmt.qmin >> ls                              # floor(qmin / 2**ls)
        hi = -((-fmt.qmax) >> ls)                        # ceil(qmax / 2**ls)
        t = bb.emit(saturate(t, lo, hi, dtype), f"{name}_pre")
        t = bb.emit(relax.op.left_shift(t, _iconst(ls, dtype)), f"{name}_shl")
    t = bb.emit(saturate(t, fmt.qmin, fmt.qmax, dtype), f"{name}_sat")
    return relax.op.astype(t, fmt.storage_dtype)


def _channel_frac(frac: np.ndarray, out_ndim: int, axis: int) -> np.ndarray:
    frac = np.asarray(frac, dtype=np.int64)
    if frac.ndim == 0 or frac.size == 1:
        return frac.reshape(())
    shape = [1] * out_ndim
    shape[axis % out_ndim] = frac.size
    return frac.reshape(shape)


def frac_needed(v: float) -> int:
    """The smallest ``f`` with ``v * 2**f`` an integer (``v`` finite; ``-inf`` for 0)."""
    if v == 0:
        return -(1 << 30)
    mant, exp = math.frexp(v)
    m = int(mant * (1 << 53))
    tz = (m & -m).bit_length() - 1
    return 53 - exp - tz


# ---- the per-op rules -------------------------------------------------------------------------------------------

class Ctx:
    """State shared by the rules of one function: the builder, every value's domain, per-op side tables."""

    def __init__(self, func, accumulator):
        self.dom: dict = {}
        self.policy = accumulator
        self.narrow = accumulator in ("narrow", "proven")
        self.accumulators: dict = {}     # layer -> how its products are accumulated (for reports)
        self.reasons: dict = {}          # layer -> why (for reports)
        claims = func.attrs.get(CLAIMS_ATTR) if func.attrs is not None else None
        self.claims = {str(k): int(v) for k, v in claims.items()} if claims is not None else {}
        tiled = func.attrs.get(TILE_CLAIMS_ATTR) if func.attrs is not None else None
        self.tiled_claims = {str(k) for k in tiled} if tiled is not None else set()
        self.composites = composite_patterns(func)
        self.dropped = {v for m in self.composites.values() for v in m.inner}
        users = consumers(func)
        annotated_const = {b.var: b.value for b in main_bindings(func)
                           if is_annotate(b.value) and is_const(b.value.args[0])}
        # the bias annotation that follows each weighted op, for the accumulator bound at the op itself
        self.bias_of = {}
        for b in main_bindings(func):
            if op_name(b.value) in ("relax.nn.conv2d", "relax.matmul"):
                us = users.get(b.var, [])
                if len(us) == 1 and op_name(us[0].value) == "relax.add" and us[0].value.args[1] in annotated_const:
                    self.bias_of[b.var] = annotated_const[us[0].value.args[1]]

    def of(self, arg, where) -> Dom:
        if is_const(arg) or arg not in self.dom:
            raise FxpGraphError(f"{where}: operand is not produced by an annotated tensor; run Annotate first")
        return self.dom[arg]


RULES: dict = {}


def rule(*ops):
    def register(fn):
        for o in ops:
            RULES[o] = fn
        return fn
    return register


@rule("fxp.annotate")
def _annotate(ctx, bb, b, orig, value, where):
    """Input quantize (float64 round half away, clip, the only float ops before the integers); weights and biases as int8/int16 constants; activations requantized: rounding right shift or saturating left shift, saturate."""
    fmt, key = annotation_format(orig)
    x = orig.args[0]
    if is_const(x):
        q = fmt.quantize(const_np(x))
        ctx.dom[b.var] = dataclasses.replace(_q_dom(fmt, q), key=key)
        return relax.const(q.astype(fmt.storage_dtype), fmt.storage_dtype)
    d = ctx.of(x, where)
    if fmt.per_channel:
        raise FxpGraphError(f"{key}: activations take per-tensor formats only")
    ctx.dom[b.var] = _q_dom(fmt)
    if d.kind == "float":  # the input quantize: same float64 expression as the simulation
        x64 = bb.emit(relax.op.astype(value.args[0], "float64"), f"{b.var.name}_f64")
        q = emit_round_clip(bb, x64, fmt, fmt.frac, b.var.name)
        return relax.op.astype(q, fmt.storage_dtype)
    return emit_requantize(bb, value.args[0], d, fmt, b.var.name)


@rule("relax.nn.conv2d", "relax.matmul")
def _weighted(ctx, bb, b, orig, value, where):
    """int8/int16 operands accumulated in int16 (proven, or k-tiled), int32 or int64 by the layer's L1/worst-case bound; cluster multipliers as one integer multiply per output."""
    name = op_name(orig)
    dx, dw = ctx.of(orig.args[0], where), ctx.of(orig.args[1], where)
    if dx.kind != "q" or dw.kind != "q" or dw.value is None:
        raise FxpGraphError(f"{where}: needs an annotated input and annotated constant weights")
    w_axis = 0 if name == "relax.nn.conv2d" else 1
    fan_in = dw.value.size // dw.value.shape[w_axis]
    acc_frac = dx.fmt.frac + np.asarray(dw.fmt.frac_list, dtype=np.int64)
    mult = dw.fmt.multiplier_array(dw.value.ndim)        # cluster multipliers (1 without)
    bacc = None
    if b.var in ctx.bias_of:
        bias = ctx.bias_of[b.var]
        bfmt, _ = annotation_format(bias)
        bq = bfmt.quantize(const_np(bias.args[0]))
        bacc = bias_at_accumulator(bq.reshape(-1), bfmt, np.broadcast_to(acc_frac, (bq.size,)))
    layer = (dw.key or "").rsplit(".", 1)[0]
    # recomputed from the graph's own constants (not the plan's record), so a tampered claim cannot pass
    proven = weighted_layer_bound(layer, dx.fmt, dw.value * mult, dw.fmt, w_axis, fan_in, bacc)
    bound = min(proven.l1, proven.worst_case)
    dtype = _acc_dtype(bound, where, narrow=ctx.narrow)
    groups = int(orig.attrs.groups) if name == "relax.nn.conv2d" else 1
    tiles = None
    if dtype == "int32" and dx.fmt.bits <= 8 and dw.fmt.bits <= 8 and (ctx.policy == "narrow" or layer in ctx.tiled_claims):
        tiles = k_tiles(dx.fmt.max_abs_q, dw.value, "conv2d" if w_axis == 0 else "matmul", groups)
    claimed = ctx.claims.get(layer)
    if claimed is not None:
        tiled = layer in ctx.tiled_claims
        proven = tiles.tile_bound if tiled and tiles is not None else bound
        if proven >= 1 << (claimed - 1) or (tiled and tiles is None and bound >= INT16_LIMIT):
            what = "each k-tile's partial sum" if tiled else "its accumulator"
            raise FxpGraphError(
                f"{where}: layer {layer}: the plan claims a proof that {what} fits {claimed} bits, but with "
                f"these weights and formats the bound is {proven} (needs {proven.bit_length() + 1} bits); the plan "
                "was edited or belongs to other weights: re-run the method (e.g. --method debruin2020) to re-prove it")
    provable_tiles = tiles is not None
    if ctx.policy == "wide":
        # wide: one int32 sum (the claim is still checked above).  proven: the plan's k-tile proof is used and
        # the build picks the kernel per target (tvm_fxp.schedules.ktiles: one int32 kernel where that is
        # faster -- AVX-512 VNNI --, the int16 tiles elsewhere: 0.52-0.68 of the int32 cycles on the A72)
        tiles = None
    ctx.reasons[layer or b.var.name] = _accumulator_reason(ctx.policy, dtype, bound, provable_tiles, tiles)
    out_ndim = len(orig.ty.shape)
    ctx.dom[b.var] = Dom("acc", _channel_frac(acc_frac, out_ndim, 1 if w_axis == 0 else -1), dtype, bound=bound)
    ctx.accumulators[layer or b.var.name] = "int16" if dtype == "int16" else \
        (f"int16 x{len(tiles.ranges)} k-tiles (k<={tiles.k}) -> int32" if tiles else dtype)
    if tiles is not None:
        out = _k_tiled(bb, b, orig, value.args[0], dw, tiles, w_axis)
    else:
        out = rebuild_weighted(orig, value.args[0], value.args[1], dtype)
    if dw.fmt.multiplier is not None:
        # clusters sharing a scale ``m * 2**-f``: the products accumulate with the stored levels (ternary:
        # additions/subtractions), then one integer multiply per output by its cluster's ``m``; the bound above
        # counts ``m``, so neither the sum nor the product can overflow ``dtype``
        acc = bb.emit(out, f"{b.var.name}_levels")
        m = np.asarray(dw.fmt.multiplier, dtype=np.int64)
        shape = [1] * out_ndim
        shape[1 if w_axis == 0 else -1] = m.size
        return relax.op.multiply(acc, _iconst(m.reshape(shape), dtype))
    return out


def _accumulator_reason(policy: str, dtype: str, bound: int, tiled_ok: bool, tiles) -> str:
    """Why a weighted layer got its accumulator (``summary.json``'s ``accumulator_reasons``, ``report.md``)."""
    need = f"proven |sum| <= {bound} ({bound.bit_length() + 1} bits)"
    if dtype == "int16":
        return f"{need} < 2**15: int16 kernel"
    if tiles is not None:
        how = "--accumulator narrow" if policy == "narrow" else "the plan's k-tile proof"
        return (f"{need}; each of {len(tiles.ranges)} input-channel k-tiles proven to fit int16 ({how}); the build "
                "fuses them into one int32 kernel where that is faster (AVX-512), else runs the int16 tiles")
    if policy == "wide":
        return f"{need}; --accumulator wide (opt-out)" + ("" if bound >= INT16_LIMIT else ": int16 was proven")
    return f"{need} > 16: {dtype}"


def _k_tiled(bb, b, orig, x, dw, tiles, w_axis):
    """The layer as a sum of int16 partial products over input-channel ranges (``tvm_fxp.bounds.k_tiles``
    proves each range's sum fits int16), each widened to int32 before the ranges are added: the int16 kernels
    do the multiply-accumulates, exactly."""
    axis = 1 if w_axis == 0 else len(orig.args[0].ty.shape) - 1
    acc = None
    for i, (c0, c1) in enumerate(tiles.ranges):
        xs = bb.emit(relax.op.strided_slice(x, axes=[axis], begin=[c0], end=[c1]), f"{b.var.name}_x{i}")
        wq = dw.value[:, c0:c1] if w_axis == 0 else dw.value[c0:c1, :]
        ws = relax.const(np.ascontiguousarray(wq).astype(dw.fmt.storage_dtype), dw.fmt.storage_dtype)
        part = bb.emit(rebuild_weighted(orig, xs, ws, "int16"), f"{b.var.name}_k{i}")
        wide = bb.emit(relax.op.astype(part, "int32"), f"{b.var.name}_k{i}_wide")
        acc = wide if acc is None else bb.emit(relax.op.add(acc, wide), f"{b.var.name}_ksum{i}")
    return acc


@rule("relax.add")
def _add(ctx, bb, b, orig, value, where):
    """Bias added at the accumulator scale ``f_x + f_w``; residual (n-ary) adds of activations shifted left to the finest scale, summed."""
    d0, d1 = ctx.of(orig.args[0], where), ctx.of(orig.args[1], where)
    if d0.kind == "acc" and d1.kind == "q" and d1.value is not None:   # bias at accumulator scale
        channel_frac = np.asarray(d0.frac, dtype=np.int64)
        flat = np.broadcast_to(channel_frac.reshape(-1), (d1.value.size,))
        bacc = bias_at_accumulator(d1.value.reshape(-1), d1.fmt, flat)
        ctx.dom[b.var] = d0
        shape = [int(s) for s in orig.args[1].ty.shape]
        return relax.op.add(value.args[0], _iconst(bacc.reshape(shape), d0.dtype))
    if d0.value is None and d1.value is None and d0.kind != "float" and d1.kind != "float":
        # residual add; an operand in an accumulator is an inner sum of an n-ary add
        return _aligned(ctx, bb, b, [value.args[0], value.args[1]], [d0, d1], relax.op.add, where, True)
    raise FxpGraphError(f"{where}: add operands must both be annotated tensors")


@rule("relax.concat")
def _concat(ctx, bb, b, orig, value, where):
    """Operands in different formats shifted left to the finest scale among them, concatenated."""
    ds = [ctx.of(a, where) for a in orig.args[0].fields]
    if any(d.kind != "q" for d in ds):
        raise FxpGraphError(f"{where}: concat operands must be annotated tensors")
    axis = int(orig.attrs.axis)
    return _aligned(ctx, bb, b, list(value.args[0].fields), ds, lambda *xs: relax.op.concat(xs, axis=axis),
                    where, False)


def _aligned(ctx, bb, b, xs, ds, combine, where, summed):
    """Shift operands left to the finest scale among them, then add/concat in the accumulator dtype."""
    acc_frac = max(int(d.frac) for d in ds)
    mags = [d.bound << (acc_frac - int(d.frac)) for d in ds]
    bound = sum(mags) if summed else max(mags)
    dtype = _acc_dtype(bound, where)
    aligned = []
    for i, (x, d) in enumerate(zip(xs, ds)):
        t = x if d.dtype == dtype else bb.emit(relax.op.astype(x, dtype), f"{b.var.name}_in{i}")
        if acc_frac != int(d.frac):
            t = bb.emit(relax.op.left_shift(t, _iconst(acc_frac - int(d.frac), dtype)), f"{b.var.name}_al{i}")
        aligned.append(t)
    ctx.dom[b.var] = Dom("acc", np.asarray(acc_frac), dtype, bound=bound)
    return combine(*aligned)


@rule("relax.mean", "relax.nn.avg_pool2d")
def _pool(ctx, bb, b, orig, value, where):
    """Integer window sum times the multiplier ``m`` (``m / 2**s ~ 1/count``, per position when the count varies)."""
    d = ctx.of(orig.args[0], where)
    count = pool_count(orig)
    m, _ = pool_multiplier(count)
    bound = d.fmt.max_abs_q * count * m
    dtype = _acc_dtype(bound, where)
    x = bb.emit(relax.op.astype(value.args[0], dtype), f"{b.var.name}_wide")
    total, s = emit_pool_sum(bb, orig, x, dtype, b.var.name)
    ctx.dom[b.var] = Dom("acc", np.asarray(d.fmt.frac + s), dtype, bound=bound)
    return total


@rule("relax.multiply")
def _mul(ctx, bb, b, orig, value, where):
    """Product of two activations ``qa * qb`` at ``2**-(fa + fb)`` (squeeze-and-excite gates)."""
    ds = [ctx.of(a, where) for a in orig.args]
    if any(d.kind != "q" or d.value is not None for d in ds):
        raise FxpGraphError(f"{where}: multiply operands must both be annotated activations")
    arith = mul_arithmetic(b.var.name, [d.fmt for d in ds])
    dtype = _acc_dtype(arith.bound.l1, where)
    xs = [bb.emit(relax.op.astype(x, dtype), f"{b.var.name}_in{i}") for i, x in enumerate(value.args)]
    ctx.dom[b.var] = Dom("acc", arith.acc_frac, dtype, bound=arith.bound.l1)
    return relax.op.multiply(*xs)


def _lrn(ctx, bb, b, orig, value, where, env):
    """Local response normalisation: ``q * T[s >> r]``, ``s`` the integer window sum of ``q**2``, ``T`` a table of ``(bias + alpha/size * S)**-beta``."""
    m = ctx.composites[b.var]
    d = ctx.of(m.x, where)
    if d.kind != "q":
        raise FxpGraphError(f"{where}: the LRN input must be an annotated activation")
    attrs = {"size": m.size, "alpha": m.alpha, "beta": m.beta, "bias": m.bias}
    arith = lrn_arithmetic(b.var.name, [d.fmt], attrs)
    x = bb.emit(relax.op.astype(env[m.x], "int64"), f"{b.var.name}_wide")
    t, _ = emit_lrn_lookup(bb, x, d.fmt, attrs, "int64", b.var.name)
    ctx.dom[b.var] = Dom("acc", arith.acc_frac, "int64", bound=arith.bound.l1)
    return relax.op.multiply(x, t)


def _table(ctx, bb, b, orig, value, where, env):
    """An elementwise function of one activation (sigmoid, tanh, SiLU, Mish, HardSwish, ...): ``T[(q - qmin) >> r]``, a
    lookup over the input's stored integers at ``2**-K`` (``passes/table.py``): exact for inputs up to 12 bits, wider
    inputs index the top 12 bits with the error bound stated per table."""
    from .table import emit_table_lookup

    m = ctx.composites[b.var]
    d = ctx.of(m.x, where)
    if d.kind != "q":
        raise FxpGraphError(f"{where}: the input of a table function must be an annotated activation")
    t, table = emit_table_lookup(bb, env[m.x], d.fmt, m, "int32", b.var.name)
    ctx.dom[b.var] = Dom("acc", np.asarray(table.frac), "int32", bound=int(np.max(np.abs(table.table))))
    return t


# layers recognised from several ops (``analysis.composite_patterns``), realized as one
COMPOSITE_RULES = {"LRN": _lrn, "table": _table}


@rule("relax.strided_slice", "relax.nn.pad")
def _select(ctx, bb, b, orig, value, where):
    """Slices (any axes, steps, negative indices) and zero/edge/reflect padding select stored integers: the same op on the integer tensor, format unchanged."""
    ctx.dom[b.var] = ctx.of(orig.args[0], where)
    return value


@rule("relax.image.resize2d")
def _resize(ctx, bb, b, orig, value, where):
    """Nearest: selects stored integers (the same op, format unchanged).  Linear (any scale; align_corners, half_pixel, asymmetric): per axis two gathered integers times weights at ``2**-11`` summing to ``2**11``, an accumulator at ``2**-(f + 22)`` the output format requantizes (``resize.py``)."""
    d = ctx.of(orig.args[0], where)
    if orig.attrs.method != "linear":
        ctx.dom[b.var] = d
        return value
    from .resize import emit_interpolation, resize_arithmetic, resize_weights

    if d.kind != "q":
        raise FxpGraphError(f"{where}: the input of a linear resize must be an annotated activation")
    rw = resize_weights(orig.attrs, static_shape(orig.args[0])[2:], static_shape(orig)[2:], where)
    arith = resize_arithmetic(b.var.name, [d.fmt], {})
    dtype = _acc_dtype(arith.bound.l1, where)
    x = bb.emit(relax.op.astype(value.args[0], dtype), f"{b.var.name}_wide")
    ctx.dom[b.var] = Dom("acc", arith.acc_frac, dtype, bound=arith.bound.l1)
    return emit_interpolation(bb, x, rw, dtype, b.var.name)


@rule("relax.maximum", "relax.minimum")
def _max_min(ctx, bb, b, orig, value, where):
    """Elementwise max/min of activations: operands shifted left to the finest scale among them, compared."""
    ds = [ctx.of(a, where) for a in orig.args]
    if any(d.kind != "q" or d.value is not None for d in ds):
        raise FxpGraphError(f"{where}: maximum/minimum operands must both be annotated activations")
    fn = relax.op.maximum if op_name(orig) == "relax.maximum" else relax.op.minimum
    return _aligned(ctx, bb, b, list(value.args), ds, fn, where, False)


@rule("relax.nn.relu")
def _relu(ctx, bb, b, orig, value, where):
    """On the accumulator or stored integers (commutes with requantize)."""
    ctx.dom[b.var] = ctx.of(orig.args[0], where)
    return value


@rule("relax.clip")
def _clip(ctx, bb, b, orig, value, where):
    """Integer bounds on the accumulator (shifted left first when a bound is finer than its step); ReLU6, HardSigmoid."""
    d = ctx.of(orig.args[0], where)
    lo, hi = float(orig.args[1].value), float(orig.args[2].value)
    frac = np.asarray(d.frac, dtype=np.int64)
    out = value.args[0]
    need = max([frac_needed(v) for v in (lo, hi) if np.isfinite(v)], default=-(1 << 30))
    extra = max(0, need - int(frac.min()))
    if extra:   # the bound is finer than the accumulator's step: shift the accumulator left (exact)
        if d.kind != "acc":
            raise FxpGraphError(f"{where}: clip bound {lo, hi} is not representable in "
                                f"{d.fmt}; give this tensor more fractional bits")
        bound = d.bound << extra
        dtype = _acc_dtype(bound, where)
        if dtype != d.dtype:
            out = bb.emit(relax.op.astype(out, dtype), f"{b.var.name}_wide")
        out = bb.emit(relax.op.left_shift(out, _iconst(extra, dtype)), f"{b.var.name}_fine")
        d = Dom("acc", frac + extra, dtype, bound=bound)
        frac = frac + extra
    ctx.dom[b.var] = d
    info = np.iinfo(d.dtype)
    for v, pick, limit in ((lo, relax.op.maximum, info.min), (hi, relax.op.minimum, info.max)):
        if not np.isfinite(v):
            continue
        scaled = np.clip(np.ldexp(v, frac), float(info.min), float(info.max))
        ints = np.where(np.abs(scaled) >= 2.0 ** 62, limit, scaled).astype(np.int64)
        out = bb.emit(pick(out, _iconst(ints, d.dtype)), f"{b.var.name}_clip")
    return out


@rule(*_LAYOUT_OPS)
def _layout(ctx, bb, b, orig, value, where):
    """Max pool and layout ops (reshape, flatten, transpose, squeeze) on the stored integers, format unchanged."""
    ctx.dom[b.var] = ctx.of(orig.args[0], where)
    return value


@rule(*FLOAT_ISLAND_OPS)
def _float_island(ctx, bb, b, orig, value, where):
    """A float island (allowed explicitly): dequantize the stored integers to float64 (exact), the op in
    float64 as the simulation computes it; the layer's output annotation quantizes the result."""
    d = ctx.of(orig.args[0], where)
    if d.kind == "acc":
        raise FxpGraphError(f"{where}: a float island's input must be an annotated tensor")
    x = value.args[0]
    if d.kind == "q":
        x64 = bb.emit(relax.op.astype(x, "float64"), f"{b.var.name}_deq_int")
        x = bb.emit(relax.op.multiply(x64, fconst(np.ldexp(1.0, -int(d.fmt.frac)), "float64")),
                    f"{b.var.name}_deq")
    ctx.dom[b.var] = Dom("float", np.asarray(0), "float64")
    return relax.Call(value.op, [x] + list(value.args[1:]), value.attrs, value.ty_args)


def _dequantize(bb, x, d: Dom, name: str):
    out = bb.emit(relax.op.astype(x, "float32"), f"{name}_int")
    return bb.emit(relax.op.multiply(out, fconst(np.ldexp(1.0, -d.fmt.frac), "float32")), name)


@rule(*EPILOGUE)
def _epilogue_op(ctx, bb, b, orig, value, where):
    """Softmax on the output after its dequantize, in float32 (as in the simulation)."""
    d = ctx.of(orig.args[0], where)
    x = value.args[0] if d.kind == "float" else _dequantize(bb, value.args[0], d, f"{b.var.name}_deq")
    ctx.dom[b.var] = Dom("float", np.asarray(0), "float32")
    return relax.Call(value.op, [x] + list(value.args[1:]), value.attrs, value.ty_args)


def realize_function(func: relax.Function, accumulator: str = "wide") -> relax.Function:
    realizer = _Realizer(func, accumulator)
    out = realizer.visit_expr(func)
    ctx = realizer.ctx
    if not ctx.accumulators:
        return out
    return out.with_attrs({ACCUMULATORS_ATTR: dict(ctx.accumulators), REASONS_ATTR: dict(ctx.reasons)})


@mutator
class _Realizer(PyExprMutator):
    """Each binding through its op's rule (``RULES``, ``COMPOSITE_RULES``); the result, where it is bound,
    dequantized to float32.

    A rule sees the original binding, its call with the operands rewritten (``value``: built, not yet type
    checked, since operands of different integer dtypes are for the rule to align) and the shared ``Ctx``;
    a composite rule sees ``env[var]`` (a var as rewritten so far) instead, its inner ops being dropped."""

    def __init__(self, func: relax.Function, accumulator: str):
        super().__init__()
        self.ctx = Ctx(func, accumulator)
        for p in func.params:
            self.ctx.dom[p] = Dom("float", np.asarray(0), str(p.ty.dtype))
        self.results = result_fields(func)
        self.result = func.body.body
        self.env = _Rewritten(self)

    def visit_var_binding_(self, binding: relax.VarBinding) -> None:
        if binding.var in self.ctx.dropped:
            return
        bb = self.builder_
        value = self._rewrite(binding)
        if binding.var.same_as(self.result):
            value = value if isinstance(value, relax.Var) else bb.emit(value, binding.var.name)
            value = map_result(bb, value, self._dequantized)
        rebind(self, binding, value)

    def _operands(self, orig: relax.Expr) -> relax.Expr:
        if isinstance(orig, relax.Call):
            return relax.Call(orig.op, [self.visit_expr(a) for a in orig.args], orig.attrs, orig.ty_args)
        return self.visit_expr(orig)

    def _rewrite(self, b: relax.VarBinding) -> relax.Expr:
        ctx, bb, orig = self.ctx, self.builder_, b.value
        name = op_name(orig)
        where = f"node {b.var.name} ({name})"
        if b.var in ctx.composites:
            rule_fn = COMPOSITE_RULES["LRN" if isinstance(ctx.composites[b.var], LrnMatch) else "table"]
            return rule_fn(ctx, bb, b, orig, None, where, self.env)
        value = self._operands(orig)
        if isinstance(orig, relax.Var):            # an alias binding (of a tensor, or of the result tuple)
            if orig in ctx.dom:
                ctx.dom[b.var] = ctx.dom[orig]
            return value
        if isinstance(orig, (relax.Tuple, relax.TupleGetItem)):
            return value
        if name not in RULES:
            raise FxpGraphError(f"{where}: op {name} cannot be realized in integers")
        return RULES[name](ctx, bb, b, orig, value, where)

    def _dequantized(self, bb, r, i):
        d = self.ctx.dom.get(self.results[i])
        if d is None or d.kind == "acc":
            raise FxpGraphError("the function result is not an annotated tensor")
        return r if d.kind == "float" else _dequantize(bb, r, d, "dequantize" if len(self.results) == 1
                                                       else f"dequantize{i}")


class _Rewritten:
    """``env[var]``: ``var`` as the mutator has rewritten it so far."""

    def __init__(self, mutator):
        self.mutator = mutator

    def __getitem__(self, var):
        return self.mutator.visit_expr(var)


ACCUMULATORS_ATTR = "fxp_accumulators"   # {layer: "int16" | "int16 xN k-tiles (k<=K) -> int32" | "int32" | "int64"}
REASONS_ATTR = "fxp_accumulator_reasons"  # {layer: why it got that accumulator}
POLICIES = ("proven", "wide", "narrow")


def realized_accumulators(mod) -> dict:
    """How each weighted layer of a realized module accumulates (``ACCUMULATORS_ATTR``)."""
    attrs = mod["main"].attrs
    if attrs is None or ACCUMULATORS_ATTR not in attrs:
        return {}
    return {str(k): str(v) for k, v in attrs[ACCUMULATORS_ATTR].items()}


def accumulator_reasons(mod) -> dict:
    """Why each weighted layer of a realized module accumulates as it does (``REASONS_ATTR``)."""
    attrs = mod["main"].attrs
    if attrs is None or REASONS_ATTR not in attrs:
        return {}
    return {str(k): str(v) for k, v in attrs[REASONS_ATTR].items()}


@tvm.transform.module_pass(opt_level=0, name="tvm_fxp.Realize")
class Realize:
    """Lower the annotated ``main`` to an integer-only graph (float only at input quantize/output dequantize).

    Parameters
    ----------
    accumulator : str
        ``"wide"`` (default): conv2d/matmul accumulate in int32, or int64 when the proof needs more.
        ``"proven"`` (the API's and CLI's default): int16 wherever the layer's proven bound (L1 or worst
        case, bias included) is below ``2**15``, so 16-bit-accumulator kernels are used; other layers as
        ``"wide"``, except that a layer whose plan proves k-tiles (de Bruin's fallback) is written as int16
        tiles widened into int32, which the build fuses into one int32 kernel where that is faster (AVX-512
        VNNI, ``tvm_fxp.schedules.ktiles``) and keeps as int16 kernels elsewhere (faster on NEON).
        ``"narrow"``: as ``"proven"``, and k-tiles wherever ``bounds.k_tiles`` finds them, claimed or not.  The realized module records per layer what it got and why (``realized_accumulators``,
        ``accumulator_reasons``).
    """

    def __init__(self, accumulator: str = "wide"):
        if accumulator not in POLICIES:
            raise ValueError(f"accumulator must be one of {POLICIES}, got {accumulator!r}")
        self.accumulator = accumulator

    def transform_module(self, mod: tvm.IRModule, ctx) -> tvm.IRModule:
        mod = map_relax_functions(
            mod, lambda f, name: realize_function(f, self.accumulator) if name == "main" else f)
        return relax.transform.DeadCodeElimination()(mod)
