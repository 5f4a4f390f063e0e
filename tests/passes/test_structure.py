"""The structural check finds float ops between the input quantize and the output dequantize."""

import numpy as np
import tvm
from tvm import relax

import tvm_fxp
from tvm_fxp.passes import float_ops_in_integer_graph
from tvm_fxp.passes.relax_utils import main_bindings, op_name
from rebuild import rebuild_function
from conftest import model_path


def test_realized_is_clean_and_float_islands_are_found():
    x = np.random.default_rng(0).random((8, 1, 28, 28), dtype=np.float32)
    q = tvm_fxp.quantize(model_path("fmnist_vgg"), x, tvm_fxp.Uniform(8), progress=False)
    realized = q.realized()
    assert float_ops_in_integer_graph(realized) == []
    # the simulated graph is all float: every conv is reported
    sim_bad = float_ops_in_integer_graph(q.simulated())
    assert sum(1 for _, op, _ in sim_bad if op == "relax.nn.conv2d") == 4
    # tamper with the realized graph: one integer max-pool computed in float in the middle
    func = realized["main"]

    def rule(bb, b, value, env):
        if op_name(b.value) == "relax.nn.max_pool2d" and "tampered" not in env:
            env["tampered"] = True
            xf = bb.emit(relax.op.astype(value.args[0], "float32"))
            pooled = bb.emit(relax.op.nn.max_pool2d(xf, pool_size=[2, 2], strides=[2, 2]))
            return relax.op.astype(pooled, str(b.var.ty.dtype))
        return value

    tampered = tvm.IRModule({"main": rebuild_function(func, rule)})
    bad = float_ops_in_integer_graph(tampered)
    ops = [op for _, op, _ in bad]
    assert "relax.nn.max_pool2d" in ops and set(ops) <= {"relax.astype", "relax.nn.max_pool2d"}, bad
    # and it still computes the same thing (so only the structure check can catch it)
    np.testing.assert_array_equal(tvm_fxp.Runner(tvm_fxp.build(tampered)).run(x),
                                  tvm_fxp.Runner(tvm_fxp.build(realized)).run(x))
