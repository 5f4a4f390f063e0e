"""Relax expression builders and integer tables shared by Simulate and Realize, so both graphs use the same
arithmetic."""

from __future__ import annotations

import numpy as np
from tvm import relax

from tvm_fxp.bounds import lrn_table, pool_multiplier
from tvm_fxp.formats import FixedPointFormat

from .relax_utils import FxpGraphError, static_shape


def fconst(v, dtype="float64"):
    return relax.const(np.asarray(v, dtype=dtype), dtype)


def saturate(x, lo, hi, dtype: str):
    """``min(max(x, lo), hi)`` with the bounds as constant tensors, not ``clip`` attributes: the bounds then
    reach the kernel as arguments, so every tensor of one shape shares one compiled kernel whatever its format
    (with ``clip`` each format would compile its own)."""
    return relax.op.minimum(relax.op.maximum(x, relax.const(np.asarray(lo, dtype), dtype)),
                            relax.const(np.asarray(hi, dtype), dtype))


def emit_round_clip(bb, x, fmt: FixedPointFormat, scale_exp, name: str):
    """``clip(round_half_away(x * 2**scale_exp), qmin, qmax)`` in float64 (the input quantize and fake-quant)."""
    scaled = bb.emit(relax.op.multiply(x, fconst(np.ldexp(1.0, scale_exp))), f"{name}_scaled")
    mag = bb.emit(relax.op.floor(relax.op.add(relax.op.abs(scaled), fconst(0.5))), f"{name}_mag")
    rounded = bb.emit(relax.op.multiply(relax.op.sign(scaled), mag), f"{name}_round")
    return bb.emit(saturate(rounded, float(fmt.qmin), float(fmt.qmax), "float64"), f"{name}_q")


def frac_scale_array(fmt: FixedPointFormat, ndim: int) -> np.ndarray:
    return fmt.frac_array(ndim)


def rebuild_weighted(call, x, w, out_dtype: str):
    """Re-create a conv2d/matmul call on new operands with a new output dtype."""
    name = call.op.name
    if name == "relax.nn.conv2d":
        a = call.attrs
        return relax.op.nn.conv2d(x, w, strides=list(a.strides), padding=list(a.padding),
                                  dilation=list(a.dilation), groups=int(a.groups), data_layout=a.data_layout,
                                  kernel_layout=a.kernel_layout, out_layout=a.out_layout, out_dtype=out_dtype)
    if name == "relax.matmul":
        return relax.op.matmul(x, w, out_dtype=out_dtype)
    raise FxpGraphError(f"not a weighted op: {name}")


def pool_count(call) -> int:
    if call.op.name == "relax.mean":
        return int(np.prod(static_shape(call.args[0])[2:]))
    return int(np.prod([int(k) for k in call.attrs.pool_size]))


def pool_multipliers(call):
    """``(m, s)``: the window sum times ``m`` is the average at ``2**-s``.  ``m`` is the scalar of
    ``tvm_fxp.bounds.pool_multiplier(count)``, or, for an ``avg_pool2d`` whose windows count a varying number of
    elements (``count_include_pad=False`` with padding), an int64 array ``(1, 1, OH, OW)`` with
    ``m_i = (count * m) // count_i``: then ``count_i * m_i <= count * m`` at every position, so the bound
    ``tvm_fxp.bounds`` proves for the full window holds everywhere, and ``m_i / 2**s ~ 1 / count_i``."""
    from .analysis import avg_pool_counts

    count = pool_count(call)
    m, s = pool_multiplier(count)
    counts = avg_pool_counts(call) if call.op.name == "relax.nn.avg_pool2d" else None
    if counts is None:
        return m, s
    return ((count * m) // counts).reshape((1, 1) + counts.shape).astype(np.int64), s


def emit_pool_sum(bb, call, x, dtype: str, name: str):
    """Integer-exact window sum of an avgpool/mean, then times the pool multiplier ``m`` (per position when
    the window count varies, see ``pool_multipliers``).

    Returns ``(expr, s)``: the value is ``sum * m`` at ``2**-s`` relative to the input scale.
    """
    m, s = pool_multipliers(call)
    if call.op.name == "relax.mean":
        axes = [int(a) for a in call.attrs.axis]
        total = bb.emit(relax.op.sum(x, axis=axes, keepdims=bool(call.attrs.keepdims)), f"{name}_sum")
    else:
        a = call.attrs
        channels = static_shape(call.args[0])[1]
        ones = relax.const(np.ones((channels, 1) + tuple(int(k) for k in a.pool_size), dtype=dtype), dtype)
        total = bb.emit(relax.op.nn.conv2d(x, ones, strides=list(a.strides), padding=list(a.padding),
                                           dilation=list(a.dilation), groups=channels, out_dtype=dtype),
                        f"{name}_sum")
    if np.ndim(m) or m != 1:
        total = bb.emit(relax.op.multiply(total, relax.const(np.asarray(m, dtype=dtype), dtype)), f"{name}_m")
    return total, s


# ---- local response normalisation -----------------------------------------------------------------------------

def lrn_band(channels: int, size: int, dtype: str):
    """The OIHW 1x1 conv weight that sums each channel's LRN window (``size // 2`` below, the rest above)."""
    co, ci = np.meshgrid(np.arange(channels), np.arange(channels), indexing="ij")
    band = ((ci - co >= -(size // 2)) & (ci - co <= size - 1 - size // 2)).astype(dtype)
    return relax.const(band.reshape(channels, channels, 1, 1), dtype)


def emit_lrn_lookup(bb, x, fmt: FixedPointFormat, attrs: dict, dtype: str, name: str):
    """``(t, table)``: the table entry ``T[s >> shift]`` for every element of ``x``, in ``dtype``.

    ``x`` holds the stored integers (integer dtype) or their real values ``q * 2**-f`` (float64).  In float64
    every step is exact: ``x*x`` and the window sums are integers times ``2**-2f`` below ``2**52``, and
    ``floor(S * 2**(2f - shift)) == s >> shift``.
    """
    t = lrn_table(fmt, attrs)
    channels = int(x.ty.shape[1])
    sq = bb.emit(relax.op.multiply(x, x), f"{name}_sq")
    s = bb.emit(relax.op.nn.conv2d(sq, lrn_band(channels, attrs["size"], dtype), out_dtype=dtype), f"{name}_ss")
    if dtype.startswith("float"):
        idx = bb.emit(relax.op.floor(relax.op.multiply(s, fconst(np.ldexp(1.0, 2 * fmt.frac - t.shift), dtype))),
                      f"{name}_idx_f")
        idx = bb.emit(relax.op.astype(idx, "int64"), f"{name}_idx")
    else:
        idx = bb.emit(relax.op.right_shift(s, relax.const(np.int64(t.shift), "int64")), f"{name}_idx")
    idx = bb.emit(saturate(idx, 0, len(t.table) - 1, "int64"), f"{name}_idxc")
    table = relax.const(t.table.astype(dtype), dtype)
    # mode "clip": the index is saturated into the table above, so clipping changes nothing, and unlike the
    # default "fast" it does not make TVM warn, at every build, that out-of-bounds indices segfault
    return bb.emit(relax.op.take(table, idx, axis=0, mode="clip"), f"{name}_t"), t
