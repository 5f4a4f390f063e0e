"""RemoveDropout (passes/remove_dropout.py): Before/Expected in TVMScript, compared structurally."""

from tvm.script import ir as I, relax as R

from tvm_fxp.passes.remove_dropout import RemoveDropout

from .structural import assert_after


def test_remove_dropout():
    """``dropout(x)[0]`` is ``x`` at inference (the dead dropout call is left to dead-code elimination)."""
    @I.ir_module
    class Before:
        @R.function
        def main(x: R.Tensor((1, 4), "float32")) -> R.Tensor((1, 4), "float32"):
            with R.dataflow():
                d = R.nn.dropout(x, 0.5)
                y = d[0]
                z = R.nn.relu(y)
                R.output(z)
            return z

    @I.ir_module
    class Expected:
        @R.function
        def main(x: R.Tensor((1, 4), "float32")) -> R.Tensor((1, 4), "float32"):
            with R.dataflow():
                d = R.nn.dropout(x, 0.5)
                z = R.nn.relu(x)
                R.output(z)
            return z

    assert_after(RemoveDropout(), Before, Expected)
