"""AffineToDepthwise (passes/affine_to_depthwise.py): Before/Expected in TVMScript, compared structurally."""

import numpy as np
from tvm.script import ir as I, relax as R

from tvm_fxp.passes.affine_to_depthwise import AffineToDepthwise

from .structural import assert_after, bind


def test_affine_to_depthwise():
    """A per-channel affine chain on an activation with no conv to fold into is a depthwise 1x1 conv2d + bias."""
    @I.ir_module
    class Before:
        @R.function
        def main(x: R.Tensor((1, 3, 4, 4), "float32"), s: R.Tensor((1, 3, 1, 1), "float32"),
                 b: R.Tensor((1, 3, 1, 1), "float32")) -> R.Tensor((1, 3, 4, 4), "float32"):
            with R.dataflow():
                a = R.nn.relu(x)
                y = R.multiply(a, s)
                z = R.add(y, b)
                R.output(z)
            return z

    @I.ir_module
    class Expected:
        @R.function
        def main(x: R.Tensor((1, 3, 4, 4), "float32"), w: R.Tensor((3, 1, 1, 1), "float32"),
                 b: R.Tensor((1, 3, 1, 1), "float32")) -> R.Tensor((1, 3, 4, 4), "float32"):
            with R.dataflow():
                a = R.nn.relu(x)
                dw = R.nn.conv2d(a, w, groups=3)
                z = R.add(dw, b)
                R.output(z)
            return z

    rng = np.random.default_rng(1)
    s, b = rng.uniform(0.5, 2, (1, 3, 1, 1)).astype("float32"), rng.normal(size=(1, 3, 1, 1)).astype("float32")
    assert_after(AffineToDepthwise(), bind(Before, s=s, b=b), bind(Expected, w=s.reshape(3, 1, 1, 1), b=b))
