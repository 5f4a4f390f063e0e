"""PushScalarMultiplies (passes/push_scalar_multiplies.py): Before/Expected in TVMScript, compared structurally."""

from tvm.script import ir as I, relax as R, tirx as T

from tvm_fxp.passes.push_scalar_multiplies import PushScalarMultiplies

from .structural import assert_after


def test_push_scalar_multiplies():
    """``clip(x, 0, 6) * 0.5`` becomes ``clip(x * 0.5, 0, 3)``, so the scale can join an affine chain."""
    @I.ir_module
    class Before:
        @R.function
        def main(x: R.Tensor((1, 4), "float32")) -> R.Tensor((1, 4), "float32"):
            with R.dataflow():
                c = R.clip(x, 0, 6)
                y = R.multiply(c, R.const(0.5, "float32"))
                R.output(y)
            return y

    @I.ir_module
    class Expected:
        @R.function
        def main(x: R.Tensor((1, 4), "float32")) -> R.Tensor((1, 4), "float32"):
            with R.dataflow():
                xs = R.multiply(x, R.const(0.5, "float32"))
                c = R.clip(xs, R.prim_value(T.float64(0.0)), R.prim_value(T.float64(3.0)))
                R.output(c)
            return c

    assert_after(PushScalarMultiplies(), Before, Expected)
