"""Realize's rules, Before/Expected in TVMScript: a conv2d with its bias and requantize, a residual add whose
operands are aligned by left shifts, an average pool (integer window sum, multiplier, requantize).  Before is
the float module annotated with a plan; Expected is the integer graph written out by hand."""

import numpy as np
from tvm.script import ir as I, relax as R

from tvm_fxp.formats import FixedPointFormat as Q
from tvm_fxp.passes import Annotate, Realize
from tvm_fxp.plan import Plan

from .structural import assert_after, bind
from .test_annotate import PLAN, Float


def test_conv2d_with_bias_and_requantize():
    """int8 operands into an int32 accumulator, the bias shifted to the accumulator scale ``2**-(6+7)``,
    relu on the accumulator, then ``(acc + 2**8 - [acc < 0]) >> 9`` saturated to uint8 (``Q(8, 4)``)."""
    @I.ir_module
    class Expected:
        @R.function
        def main(x: R.Tensor((1, 2, 4, 4), "float32"), w: R.Tensor((3, 2, 1, 1), "int8"),
                 b: R.Tensor((1, 3, 1, 1), "int32")) -> R.Tensor((1, 3, 4, 4), "float32"):
            R.func_attr({"fxp_accumulators": {"conv2d_0": "int32"}})
            with R.dataflow():
                x64 = R.astype(x, "float64")
                xs = R.multiply(x64, R.const(64.0, "float64"))
                xm = R.floor(R.add(R.abs(xs), R.const(0.5, "float64")))
                xr = R.multiply(R.sign(xs), xm)
                xq = R.minimum(R.maximum(xr, R.const(-128.0, "float64")), R.const(127.0, "float64"))
                xi = R.astype(xq, "int8")
                wi = w
                acc = R.nn.conv2d(xi, wi, out_dtype="int32")
                biased = R.add(acc, b)
                r = R.nn.relu(biased)
                neg = R.astype(R.less(r, R.const(0, "int32")), "int32")
                rounded = R.subtract(R.add(r, R.const(256, "int32")), neg)
                shifted = R.right_shift(rounded, R.const(9, "int32"))
                sat = R.minimum(R.maximum(shifted, R.const(0, "int32")), R.const(255, "int32"))
                q = R.astype(sat, "uint8")
                out = R.multiply(R.astype(q, "float32"), R.const(2.0 ** -4, "float32"))
                R.output(out)
            return out

    rng = np.random.default_rng(0)
    w, b = rng.normal(0, 0.3, (3, 2, 1, 1)).astype("float32"), rng.normal(0, 0.3, (1, 3, 1, 1)).astype("float32")
    wq = PLAN["conv2d_0.weight"].quantize(w).astype("int8")
    bias_acc = (PLAN["conv2d_0.bias"].quantize(b) << (6 + 7 - 6)).astype("int32")
    assert_after(lambda m: Realize()(Annotate(PLAN)(m)), bind(Float, w=w, b=b), bind(Expected, w=wq, b=bias_acc))


def test_residual_add_aligns_operands_by_left_shifts():
    """``Q(8, 6) + Q(8, 4)``: both widened to int32, the coarser shifted left by 2 to ``2**-6``, added, then
    requantized to ``Q(8, 4)``: ``(s + 2 - [s < 0]) >> 2`` saturated to int8."""
    @I.ir_module
    class Before:
        @R.function
        def main(x1: R.Tensor((1, 4), "float32"), x2: R.Tensor((1, 4), "float32")) -> R.Tensor((1, 4), "float32"):
            with R.dataflow():
                s = R.add(x1, x2)
                R.output(s)
            return s

    @I.ir_module
    class Expected:
        @R.function
        def main(x1: R.Tensor((1, 4), "float32"), x2: R.Tensor((1, 4), "float32")) -> R.Tensor((1, 4), "float32"):
            with R.dataflow():
                a64 = R.astype(x1, "float64")
                a_s = R.multiply(a64, R.const(64.0, "float64"))
                a_m = R.floor(R.add(R.abs(a_s), R.const(0.5, "float64")))
                a_r = R.multiply(R.sign(a_s), a_m)
                a_q = R.minimum(R.maximum(a_r, R.const(-128.0, "float64")), R.const(127.0, "float64"))
                a = R.astype(a_q, "int8")
                b64 = R.astype(x2, "float64")
                b_s = R.multiply(b64, R.const(16.0, "float64"))
                b_m = R.floor(R.add(R.abs(b_s), R.const(0.5, "float64")))
                b_r = R.multiply(R.sign(b_s), b_m)
                b_q = R.minimum(R.maximum(b_r, R.const(-128.0, "float64")), R.const(127.0, "float64"))
                b = R.astype(b_q, "int8")
                a32 = R.astype(a, "int32")
                b32 = R.astype(b, "int32")
                b_aligned = R.left_shift(b32, R.const(2, "int32"))
                s = R.add(a32, b_aligned)
                neg = R.astype(R.less(s, R.const(0, "int32")), "int32")
                rounded = R.subtract(R.add(s, R.const(2, "int32")), neg)
                shifted = R.right_shift(rounded, R.const(2, "int32"))
                sat = R.minimum(R.maximum(shifted, R.const(-128, "int32")), R.const(127, "int32"))
                q = R.astype(sat, "int8")
                out = R.multiply(R.astype(q, "float32"), R.const(2.0 ** -4, "float32"))
                R.output(out)
            return out

    plan = Plan({"input_x1.output": Q(8, 6), "input_x2.output": Q(8, 4), "add_0.output": Q(8, 4)})
    assert_after(lambda m: Realize()(Annotate(plan)(m)), Before, Expected)


def test_average_pool_sums_in_integers():
    """A 2x2 average pool of ``Q(8, 6)``: widened to int32, the window sum as a depthwise conv2d with ones
    (multiplier ``m = 1``, ``2**-2`` = 1/4), requantized from ``2**-8`` to ``Q(8, 6)``."""
    @I.ir_module
    class Before:
        @R.function
        def main(x: R.Tensor((1, 2, 4, 4), "float32")) -> R.Tensor((1, 2, 2, 2), "float32"):
            with R.dataflow():
                p = R.nn.avg_pool2d(x, pool_size=[2, 2], strides=[2, 2])
                R.output(p)
            return p

    @I.ir_module
    class Expected:
        @R.function
        def main(x: R.Tensor((1, 2, 4, 4), "float32"), ones: R.Tensor((2, 1, 2, 2), "int32")
                 ) -> R.Tensor((1, 2, 2, 2), "float32"):
            with R.dataflow():
                x64 = R.astype(x, "float64")
                xs = R.multiply(x64, R.const(64.0, "float64"))
                xm = R.floor(R.add(R.abs(xs), R.const(0.5, "float64")))
                xr = R.multiply(R.sign(xs), xm)
                xq = R.minimum(R.maximum(xr, R.const(-128.0, "float64")), R.const(127.0, "float64"))
                xi = R.astype(xq, "int8")
                wide = R.astype(xi, "int32")
                total = R.nn.conv2d(wide, ones, strides=[2, 2], groups=2, out_dtype="int32")
                neg = R.astype(R.less(total, R.const(0, "int32")), "int32")
                rounded = R.subtract(R.add(total, R.const(2, "int32")), neg)
                shifted = R.right_shift(rounded, R.const(2, "int32"))
                sat = R.minimum(R.maximum(shifted, R.const(-128, "int32")), R.const(127, "int32"))
                q = R.astype(sat, "int8")
                out = R.multiply(R.astype(q, "float32"), R.const(2.0 ** -6, "float32"))
                R.output(out)
            return out

    plan = Plan({"input": Q(8, 6), "avgpool_0.output": Q(8, 6)})
    assert_after(lambda m: Realize()(Annotate(plan)(m)), Before,
                 bind(Expected, ones=np.ones((2, 1, 2, 2), "int32")))
