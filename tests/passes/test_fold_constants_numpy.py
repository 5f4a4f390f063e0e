"""FoldConstantsNumpy (passes/fold_constants_numpy.py): Before/Expected in TVMScript, compared structurally."""

import numpy as np
from tvm.script import ir as I, relax as R

from tvm_fxp.passes.fold_constants_numpy import FoldConstantsNumpy

from .structural import assert_after, bind


def test_fold_constants_numpy():
    """A transposed constant weight (Gemm with transB) becomes the transposed constant."""
    @I.ir_module
    class Before:
        @R.function
        def main(x: R.Tensor((2, 3), "float32"), w: R.Tensor((4, 3), "float32")) -> R.Tensor((2, 4), "float32"):
            with R.dataflow():
                wt = R.permute_dims(w, [1, 0])
                y = R.matmul(x, wt)
                R.output(y)
            return y

    @I.ir_module
    class Expected:
        @R.function
        def main(x: R.Tensor((2, 3), "float32"), c: R.Tensor((3, 4), "float32")) -> R.Tensor((2, 4), "float32"):
            with R.dataflow():
                wt = c                       # bound to the folded constant (dead-code elimination drops it)
                y = R.matmul(x, wt)
                R.output(y)
            return y

    w = np.arange(12, dtype="float32").reshape(4, 3)
    assert_after(FoldConstantsNumpy(), bind(Before, w=w), bind(Expected, c=np.ascontiguousarray(w.T)))
