"""CanonicalizeSum (passes/canonicalize_sum.py): Before/Expected in TVMScript, compared structurally."""

from tvm.script import ir as I, relax as R

from tvm_fxp.passes.canonicalize_sum import CanonicalizeSum

from .structural import assert_after


def test_canonicalize_sum():
    """ONNX ``Sum`` as imported, ``sum(stack((broadcast_to(a), b, c)), axis=0)``, becomes ``(a + b) + c``."""
    @I.ir_module
    class Before:
        @R.function
        def main(x: R.Tensor((2, 4), "float32")) -> R.Tensor((2, 4), "float32"):
            with R.dataflow():
                a = R.nn.relu(x)
                b = R.abs(x)
                c = R.negative(x)
                a1 = R.broadcast_to(a, R.shape([2, 4]))
                st = R.stack((a1, b, c), axis=0)
                s = R.sum(st, axis=[0])
                R.output(s)
            return s

    @I.ir_module
    class Expected:
        @R.function
        def main(x: R.Tensor((2, 4), "float32")) -> R.Tensor((2, 4), "float32"):
            with R.dataflow():
                a = R.nn.relu(x)
                b = R.abs(x)
                c = R.negative(x)
                a1 = R.broadcast_to(a, R.shape([2, 4]))
                st = R.stack((a1, b, c), axis=0)
                s0 = R.add(a, b)
                s = R.add(s0, c)
                R.output(s)
            return s

    assert_after(CanonicalizeSum(), Before, Expected)
