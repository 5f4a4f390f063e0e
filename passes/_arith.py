"""Relax expression builders shared by Simulate and Realize, so both graphs use the same arithmetic."""

from __future__ import annotations

import numpy as np
from tvm import relax

from tvm_fxp.bounds import pool_multiplier
from tvm_fxp.formats import FixedPointFormat

from ._ir import FxpGraphError, static_shape


def fconst(v, dtype="float64"):
    return relax.const(np.asarray(v, dtype=dtype), dtype)


def emit_round_clip(bb, x, fmt: FixedPointFormat, scale_exp, name: str):
    """``clip(round_half_away(x * 2**scale_exp), qmin, qmax)`` in float64 (the input quantize and fake-quant)."""
    scaled = bb.emit(relax.op.multiply(x, fconst(np.ldexp(1.0, scale_exp))), f"{name}_scaled")
    mag = bb.emit(relax.op.floor(relax.op.add(relax.op.abs(scaled), fconst(0.5))), f"{name}_mag")
    rounded = bb.emit(relax.op.multiply(relax.op.sign(scaled), mag), f"{name}_round")
    return bb.emit(relax.op.clip(rounded, float(fmt.qmin), float(fmt.qmax)), f"{name}_q")


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


def emit_pool_sum(bb, call, x, dtype: str, name: str):
    """Integer-exact window sum of an avgpool/mean, then times the pool multiplier ``m``.

    Returns ``(expr, s)``: the value is ``sum * m`` at ``2**-s`` relative to the input scale.
    """
    count = pool_count(call)
    m, s = pool_multiplier(count)
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
    if m != 1:
        total = bb.emit(relax.op.multiply(total, relax.const(np.asarray(m, dtype=dtype), dtype)), f"{name}_m")
    return total, s
