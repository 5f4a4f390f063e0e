"""Linear Resize with any scale and coordinate mode, as integer interpolation (a layer of kind ``resize``).

``Prepare`` turns a linear resize by an integer factor with ``half_pixel``-like modes into a depthwise conv2d
whose weights are exact (``selection.py``).  Every other linear resize (``align_corners``, non-integer scales,
``scales`` or ``sizes``) is this layer: along each spatial axis output ``m`` reads the source coordinate ``u(m)``
of the ONNX coordinate transformation (as TVM's ``resize2d`` computes it from the input and output sizes),
clamped to ``[0, n - 1]``, and interpolates its two neighbours ``i0 = floor(u)``, ``i1 = min(i0 + 1, n - 1)``
with the weights ``1 - lam``, ``lam`` (``lam = u - i0``, computed as an exact fraction), rounded to
``WEIGHT_BITS`` fractional bits so that each pair sums to ``2**WEIGHT_BITS`` exactly:

    acc[h, w] = sum_{a, b} vh_a[h] * vw_b[w] * q[ih_a[h], iw_b[w]]       at 2**-(f + 2 * WEIGHT_BITS)

(the W axis first, then the H axis, each a gather of stored integers and two integer products), an accumulator
with ``|acc| <= max|q| * 2**(2 * WEIGHT_BITS)`` that the layer's output format requantizes (rounding shift,
saturate) like any other layer.  The simulation computes the same sums in float64 (exact) and scales by
``2**-(2 * WEIGHT_BITS)``, so the two agree bit for bit.  Against the exact bilinear interpolation of the same
stored integers the accumulator is off by at most ``max|q| * sum |w_hat - w|`` (``ResizeWeights.bound``: the
rounded weights' largest total error over the output positions, below ``2**-WEIGHT_BITS``), far below the
output step; the output rounding adds half an output step.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import numpy as np
from tvm import relax

from tvm_fxp.bounds import EXTRA_ARITHMETIC

WEIGHT_BITS = 11         # 8-bit inputs: |acc| <= 255 * 2**22 < 2**31 (int32); wider inputs accumulate in int64
MODES = ("half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric")


@dataclass(frozen=True)
class AxisWeights:
    """One axis: output ``m`` is ``(w0[m] * x[i0[m]] + w1[m] * x[i1[m]]) * 2**-WEIGHT_BITS``."""

    i0: np.ndarray
    i1: np.ndarray
    w0: np.ndarray
    w1: np.ndarray
    exact: np.ndarray       # lam as float64 (for the error bound)


def axis_weights(n_in: int, n_out: int, mode: str) -> AxisWeights:
    one = 1 << WEIGHT_BITS
    i0, i1, w1, lams = [], [], [], []
    for m in range(n_out):
        if mode == "align_corners":
            u = Fraction(m * (n_in - 1), n_out - 1) if n_out > 1 else Fraction(0)
        elif mode == "asymmetric":
            u = Fraction(m * n_in, n_out)
        elif mode == "pytorch_half_pixel" and n_out == 1:
            u = Fraction(0)
        else:   # half_pixel, pytorch_half_pixel
            u = (m + Fraction(1, 2)) * Fraction(n_in, n_out) - Fraction(1, 2)
        u = min(max(u, Fraction(0)), Fraction(n_in - 1))
        lo = int(u)                                      # floor: u >= 0
        lam = u - lo
        i0.append(lo), i1.append(min(lo + 1, n_in - 1)), lams.append(float(lam))
        w1.append(int(lam * one + Fraction(1, 2)))      # round half up (lam >= 0)
    w1 = np.asarray(w1, np.int64)
    return AxisWeights(np.asarray(i0, np.int64), np.asarray(i1, np.int64), one - w1, w1, np.asarray(lams))


@dataclass(frozen=True)
class ResizeWeights:
    h: AxisWeights
    w: AxisWeights

    @property
    def bound(self) -> float:
        """Max over output positions of ``sum |w_hat - w|`` over the (up to four) products: times ``max|x|``, the
        largest distance of the accumulator from the exact bilinear interpolation of the same input."""
        def err(a: AxisWeights):
            hat1 = np.ldexp(a.w1.astype(np.float64), -WEIGHT_BITS)
            return np.abs(hat1 - a.exact), np.ldexp(a.w0.astype(np.float64), -WEIGHT_BITS) + hat1
        eh, sh = err(self.h)
        ew, sw = err(self.w)
        # |vh*vw - lh*lw| summed over 2x2 taps <= 2*eh*sum(vw) + 2*ew*sum(lh)   (each pair sums to 1)
        return float(2 * eh.max() + 2 * ew.max())


def resize_weights(attrs, in_hw, out_hw, where: str) -> ResizeWeights:
    from .relax_utils import FxpGraphError

    mode = str(attrs.coordinate_transformation_mode)
    if attrs.layout != "NCHW" or mode not in MODES:
        raise FxpGraphError(f"{where}: linear resize with layout {attrs.layout} and coordinate mode {mode} is not "
                            f"supported (NCHW; {', '.join(MODES)})")
    return ResizeWeights(axis_weights(in_hw[0], out_hw[0], mode), axis_weights(in_hw[1], out_hw[1], mode))


def resize_arithmetic(name: str, fmts: list, attrs: dict):
    """The interpolation sum at ``2**-(f + 2 * WEIGHT_BITS)``, magnitude at most ``max|q| * 2**(2 * WEIGHT_BITS)``."""
    from tvm_fxp.bounds import AccumulatorBound, LayerArithmetic

    (x,) = fmts
    bound = x.max_abs_q << (2 * WEIGHT_BITS)
    return LayerArithmetic(name, np.asarray(x.frac + 2 * WEIGHT_BITS), AccumulatorBound(name, bound, bound, 4))


EXTRA_ARITHMETIC["resize"] = resize_arithmetic     # the core's registry of layer arithmetic (tvm_fxp.bounds)


def emit_interpolation(bb, x, rw: ResizeWeights, dtype: str, name: str):
    """The interpolation sum of ``x`` (NCHW, already in ``dtype``: integers, or float64 multiples of ``2**-f``),
    with the integer weights, unscaled (at ``2**-(2 * WEIGHT_BITS)`` relative to ``x``)."""
    for axis, a in ((3, rw.w), (2, rw.h)):
        shape = (-1, 1) if axis == 2 else (-1,)

        def gather(idx, tag):
            return bb.emit(relax.op.take(x, relax.const(idx.astype("int64")), axis=axis, mode="clip"),
                           f"{name}_{tag}{axis}")

        def weight(w):
            return relax.const(w.reshape(shape).astype(dtype), dtype)

        if np.array_equal(a.i0, a.i1):          # every output on one source sample (e.g. a 1-pixel axis)
            x = bb.emit(relax.op.multiply(gather(a.i0, "g"), weight(a.w0 + a.w1)), f"{name}_ax{axis}")
            continue
        lo = bb.emit(relax.op.multiply(gather(a.i0, "lo"), weight(a.w0)), f"{name}_wlo{axis}")
        hi = bb.emit(relax.op.multiply(gather(a.i1, "hi"), weight(a.w1)), f"{name}_whi{axis}")
        x = bb.emit(relax.op.add(lo, hi), f"{name}_ax{axis}")
    return x
