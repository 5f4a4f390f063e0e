"""FuseGraph (schedules/graph.py): a small model's kernels run as one call, with the same integers."""

import numpy as np
import pytest
import tvm

import tvm_fxp
from tvm_fxp.calibrate import calibrate
from tvm_fxp.methods import uniform
from tvm_fxp.runtime import profile
from tvm_fxp.schedules import graph, per_kernel


def kernel_calls(ex) -> list:
    """The non-builtin calls of ``main`` in a VM executable's text."""
    calls = []
    for line in ex.as_text().split("@vm.builtin")[0].splitlines():
        parts = line.split()
        if len(parts) > 1 and parts[0] == "call" and not parts[1].startswith(("vm.builtin", "shape_func")):
            calls.append(parts[1])
    return calls


@pytest.fixture(scope="module")
def small_q(tmp_path_factory):
    """conv + relu, max pool, a residual block (conv, conv, add + relu), global pool, dense: uniform 8-bit."""
    from onnx_graphs import Net, save

    g = Net([1, 3, 12, 12], seed=3)
    x = g.maxpool(g.op("Relu", [g.conv("input", 3, 8)]), 2, 2)
    y = g.op("Relu", [g.conv(x, 8, 8)])
    x = g.op("Relu", [g.op("Add", [x, g.conv(y, 8, 8)])])
    out = g.gemm(g.flatten(g.op("GlobalAveragePool", [x])), 8, 5)
    prepared, lg = tvm_fxp.load_model(save(g.model(out), tmp_path_factory.mktemp("graph")))
    calib = np.random.default_rng(0).normal(0, 1, (32, 3, 12, 12)).astype("float32")
    stats = calibrate(prepared, lg, calib, batch_size=32, progress=False)
    return tvm_fxp.bind_plan(prepared, lg, uniform.allocate(lg, stats, tvm_fxp.Uniform(8)))


def test_small_model_is_one_kernel_call_with_the_same_integers(small_q):
    """The realized build calls one fused kernel; built kernel by kernel (``per_kernel``) it makes every call
    on its own; both give the simulation's outputs exactly, at batch 9 and batch 1."""
    x = np.random.default_rng(1).normal(0, 1, (9, 3, 12, 12)).astype("float32")
    real = small_q.realized()
    fused = tvm_fxp.build(real)
    with per_kernel():
        separate = tvm_fxp.build(real)
    assert kernel_calls(fused) == ["main_graph0"]
    assert len(kernel_calls(separate)) >= 6 and not any("graph" in c for c in kernel_calls(separate))
    got = tvm_fxp.Runner(fused).run(x)
    np.testing.assert_array_equal(got, tvm_fxp.Runner(separate).run(x))
    np.testing.assert_array_equal(got, tvm_fxp.Runner(tvm_fxp.build(small_q.simulated())).run(x))
    np.testing.assert_array_equal(tvm_fxp.Runner(fused).run(x[4:5]), got[4:5])
    assert len(np.unique(got, axis=0)) >= 5     # the images give different outputs
    rows = profile(fused, x[:1])
    assert [r["kernel"] for r in rows if not r["kernel"].startswith("shape_func")] == ["main_graph0"]


def test_large_function_stays_separate_calls(small_q, monkeypatch):
    """A function whose kernel outputs total more than MAX_BYTES (here set below this model's) is not fused."""
    monkeypatch.setattr(graph, "MAX_BYTES", 1024)
    calls = kernel_calls(tvm_fxp.build(small_q.realized()))
    assert len(calls) >= 6 and "main_graph0" not in calls
