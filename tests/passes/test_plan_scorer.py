"""passes/plan_scorer.py: the compiled-once simulation gives Simulate's outputs bit for bit, and building it
prints nothing (no TVM "Fast mode segfaults" warning for its in-range gathers)."""

import numpy as np
import tvm
from tvm import relax

import tvm_fxp
from tvm_fxp.passes import Annotate, Simulate, analyze
from tvm_fxp.passes.plan_scorer import PlanScorer
from tvm_fxp.methods.uniform import Uniform, allocate
from tvm_fxp.statistics import TensorStats


def perceptron() -> tvm.IRModule:
    rng = np.random.default_rng(0)
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((tvm.tirx.Var("n", "int64"), 6), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            h = bb.emit(relax.op.matmul(x, relax.const(rng.normal(0, 0.5, (6, 5)).astype("float32"))))
            h = bb.emit(relax.op.add(h, relax.const(rng.normal(0, 0.1, (5,)).astype("float32"))))
            out = bb.emit_output(bb.emit(relax.op.nn.relu(h)))
        bb.emit_func_output(out)
    return bb.get()


def test_scorer_equals_simulate_and_builds_quietly(capfd):
    mod = perceptron()
    lg = analyze(mod["main"])
    x = np.random.default_rng(1).normal(0, 1, (32, 6)).astype("float32")
    h = np.maximum(x @ lg.layers["matmul_0"].weight + lg.layers["matmul_0"].bias, 0)
    stats = {"input": TensorStats.of(x), "matmul_0.output": TensorStats.of(h)}
    plan = allocate(lg, stats, Uniform(6))
    capfd.readouterr()
    scorer = PlanScorer(mod, plan, tvm_fxp.build)
    out = scorer.outputs(plan, x)
    assert "Fast mode segfaults" not in capfd.readouterr().err
    expected = tvm_fxp.Runner(tvm_fxp.build(Simulate()(Annotate(plan)(mod)))).run(x)
    np.testing.assert_array_equal(out, expected)
    assert len(np.unique(out)) > 4
