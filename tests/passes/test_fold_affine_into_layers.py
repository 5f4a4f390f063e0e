"""FoldAffineIntoLayers (passes/fold_affine_into_layers.py): Before/Expected in TVMScript, compared structurally."""

import numpy as np
from tvm.script import ir as I, relax as R

from tvm_fxp.passes.fold_affine_into_layers import FoldAffineIntoLayers

from .structural import assert_after, bind

F64 = np.float64


def test_fold_affine_into_layers():
    """A per-channel scale and shift after a conv2d (batch-norm as Mul/Add) fold into its weights and one bias."""
    @I.ir_module
    class Before:
        @R.function
        def main(x: R.Tensor((1, 2, 4, 4), "float32"), w: R.Tensor((3, 2, 1, 1), "float32"),
                 s: R.Tensor((1, 3, 1, 1), "float32"), b: R.Tensor((1, 3, 1, 1), "float32")
                 ) -> R.Tensor((1, 3, 4, 4), "float32"):
            with R.dataflow():
                y = R.nn.conv2d(x, w)
                z = R.multiply(y, s)
                u = R.add(z, b)
                R.output(u)
            return u

    @I.ir_module
    class Expected:
        @R.function
        def main(x: R.Tensor((1, 2, 4, 4), "float32"), w: R.Tensor((3, 2, 1, 1), "float32"),
                 b: R.Tensor((1, 3, 1, 1), "float32")) -> R.Tensor((1, 3, 4, 4), "float32"):
            with R.dataflow():
                y = R.nn.conv2d(x, w)
                u = R.add(y, b)
                R.output(u)
            return u

    rng = np.random.default_rng(0)
    w, b = rng.normal(size=(3, 2, 1, 1)).astype("float32"), rng.normal(size=(1, 3, 1, 1)).astype("float32")
    s = rng.uniform(0.5, 2, (1, 3, 1, 1)).astype("float32")
    folded = (w.astype(F64) * s.reshape(3, 1, 1, 1).astype(F64)).astype("float32")
    assert_after(FoldAffineIntoLayers(), bind(Before, w=w, s=s, b=b), bind(Expected, w=folded, b=b))
