import numpy as np
import onnxruntime as ort
import pytest

import tvm_fxp
from tvm_fxp.passes import Prepare
from tvm_fxp.passes.relax_utils import main_bindings, op_name
from onnx_graphs import GraphBuilder, save


def _ops(mod):
    return [op_name(b.value) for b in main_bindings(mod["main"])]


@pytest.mark.parametrize("bn_as_mul_add", [False, True])
def test_batchnorm_folds_into_conv_exactly_enough(tmp_path, rng, bn_as_mul_add):
    g = GraphBuilder([1, 3, 12, 12])
    x = g.conv("input", 3, 8)
    if bn_as_mul_add:  # batch-norm written as Mul/Add by some exporters
        x = g.op("Mul", [x, g.const(rng.uniform(0.5, 2, (1, 8, 1, 1)))])
        x = g.op("Add", [x, g.const(rng.normal(0, 1, (1, 8, 1, 1)))])
    else:
        x = g.bn(x, 8)
    x = g.op("Relu", [x])
    path = save(g.model(x), tmp_path)
    mod = Prepare()(tvm_fxp.import_onnx(path))
    ops = _ops(mod)
    assert ops == ["relax.nn.conv2d", "relax.add", "relax.nn.relu"], ops
    inp = rng.random((4, 3, 12, 12), dtype=np.float32)
    ours = tvm_fxp.Runner(tvm_fxp.build(mod)).run(inp)
    ref = ort.InferenceSession(str(path)).run(None, {"input": inp})[0]
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-5)


def test_gemm_weights_are_constants_after_prepare(tmp_path):
    g = GraphBuilder([1, 4, 2, 2])
    x = g.op("Flatten", ["input"])
    x = g.gemm(x, 16, 5)
    mod = Prepare()(tvm_fxp.import_onnx(save(g.model(x), tmp_path)))
    assert _ops(mod) == ["relax.reshape", "relax.matmul", "relax.add"]
