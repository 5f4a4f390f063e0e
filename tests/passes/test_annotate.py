"""Annotate, Before/Expected in TVMScript: every input, weight, bias and layer output gets its plan's format as
an ``fxp.annotate`` call (written in the Expected module through ``annotate``, the op's own builder)."""

import numpy as np
from tvm.script import ir as I, relax as R

from tvm_fxp.formats import FixedPointFormat as Q
from tvm_fxp.passes import Annotate
from tvm_fxp.passes.ops import annotate as fxp
from tvm_fxp.plan import Plan

from .structural import assert_after, bind

PLAN = Plan({"input": Q(8, 6), "conv2d_0.weight": Q(8, 7), "conv2d_0.bias": Q(8, 6),
             "conv2d_0.output": Q(8, 4, False)})


@I.ir_module
class Float:
    @R.function
    def main(x: R.Tensor((1, 2, 4, 4), "float32"), w: R.Tensor((3, 2, 1, 1), "float32"),
             b: R.Tensor((1, 3, 1, 1), "float32")) -> R.Tensor((1, 3, 4, 4), "float32"):
        with R.dataflow():
            y = R.nn.conv2d(x, w)
            u = R.add(y, b)
            r = R.nn.relu(u)
            R.output(r)
        return r


def test_annotate_marks_every_tensor_with_its_format():
    @I.ir_module
    class Expected:
        @R.function
        def main(x: R.Tensor((1, 2, 4, 4), "float32"), w: R.Tensor((3, 2, 1, 1), "float32"),
                 b: R.Tensor((1, 3, 1, 1), "float32")) -> R.Tensor((1, 3, 4, 4), "float32"):
            with R.dataflow():
                xa = fxp(x, Q(8, 6), "input")
                wa = fxp(w, Q(8, 7), "conv2d_0.weight")
                y = R.nn.conv2d(xa, wa)
                ba = fxp(b, Q(8, 6), "conv2d_0.bias")
                u = R.add(y, ba)
                r = R.nn.relu(u)
                ra = fxp(r, Q(8, 4, False), "conv2d_0.output")
                R.output(ra)
            return ra

    rng = np.random.default_rng(0)
    w, b = rng.normal(0, 0.3, (3, 2, 1, 1)).astype("float32"), rng.normal(0, 0.3, (1, 3, 1, 1)).astype("float32")
    assert_after(Annotate(PLAN), bind(Float, w=w, b=b), bind(Expected, w=w, b=b))
