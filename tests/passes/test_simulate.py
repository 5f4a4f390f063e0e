"""Simulate, Before/Expected in TVMScript: the annotated graph in float64, every annotation a fake-quant
``clip(sign(v) * floor(|v| + 0.5)) * 2**-f`` of ``v = x * 2**f``, weights and biases fake-quantized constants,
the result cast back to float32."""

import numpy as np
from tvm.script import ir as I, relax as R

from tvm_fxp.passes import Annotate, Simulate

from .structural import assert_after, bind
from .test_annotate import PLAN, Float


def test_simulate_fake_quantizes_in_float64():
    @I.ir_module
    class Expected:
        @R.function
        def main(x: R.Tensor((1, 2, 4, 4), "float32"), w: R.Tensor((3, 2, 1, 1), "float64"),
                 b: R.Tensor((1, 3, 1, 1), "float64")) -> R.Tensor((1, 3, 4, 4), "float32"):
            with R.dataflow():
                x64 = R.astype(x, "float64")
                xs = R.multiply(x64, R.const(64.0, "float64"))
                xm = R.floor(R.add(R.abs(xs), R.const(0.5, "float64")))
                xr = R.multiply(R.sign(xs), xm)
                xq = R.minimum(R.maximum(xr, R.const(-128.0, "float64")), R.const(127.0, "float64"))
                xa = R.multiply(xq, R.const(2.0 ** -6, "float64"))
                wa = w
                y = R.nn.conv2d(xa, wa, out_dtype="float64")
                ba = b
                u = R.add(y, ba)
                r = R.nn.relu(u)
                rs = R.multiply(r, R.const(16.0, "float64"))
                rm = R.floor(R.add(R.abs(rs), R.const(0.5, "float64")))
                rr = R.multiply(R.sign(rs), rm)
                rq = R.minimum(R.maximum(rr, R.const(0.0, "float64")), R.const(255.0, "float64"))
                ra = R.multiply(rq, R.const(2.0 ** -4, "float64"))
                out = R.astype(ra, "float32")
                R.output(out)
            return out

    rng = np.random.default_rng(0)
    w, b = rng.normal(0, 0.3, (3, 2, 1, 1)).astype("float32"), rng.normal(0, 0.3, (1, 3, 1, 1)).astype("float32")
    w_sim = PLAN["conv2d_0.weight"].fake_quantize(w)              # float64, multiples of 2**-7
    b_sim = PLAN["conv2d_0.bias"].fake_quantize(b)
    assert_after(lambda m: Simulate()(Annotate(PLAN)(m)), bind(Float, w=w, b=b), bind(Expected, w=w_sim, b=b_sim))
