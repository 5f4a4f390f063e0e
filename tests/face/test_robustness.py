"""Robustness: bad models and data get errors that name the problem; edge cases quantize exactly; and a
Hypothesis suite of random small graphs with random formats, simulated == realized bit for bit.

The random suite builds many independent cases (graph, formats, input) into one ONNX model with one input
and one output per case, and compiles the simulated and the realized module once each.  To keep more than a
thousand cases within the default run's budget (compile time dominates), the suite compiles for LLVM
``opt-level=0`` with a static batch and with scalar constants passed as 1-element tensors, so kernels of one
shape are shared across formats (``_shared_kernels``; the arithmetic is unchanged), and loads the exported
library instead of JIT-compiling it.  The slow variant (``-m slow``) uses longer graphs and the production
build (host target, dynamic batch, ``tvm_fxp.build``).
"""

from __future__ import annotations

import json
import os
import tempfile

import networkx as nx
import numpy as np
import onnx
import pytest
import tvm
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from tvm import relax

import tvm_fxp
from tvm_fxp.api import output_integers
from tvm_fxp.formats import FixedPointFormat, FormatError, frac_for_range
from tvm_fxp.methods import MethodError
from tvm_fxp.passes import FxpGraphError, float_ops_in_integer_graph
from tvm_fxp.passes.relax_utils import const_np, is_const
from rebuild import rebuild_function
from tvm_fxp.plan import Plan, PlanError
from onnx_graphs import GraphBuilder, Net, multi_io_model, save

FAST_TARGET = tvm.target.Target({"kind": "llvm", "opt-level": 0})


def _bit_exact(path, x, bits=8, input_shape=None, per_channel=False):
    """Quantize, realize, build, and check simulation == integer graph; returns (Quantized, outputs)."""
    q = tvm_fxp.quantize(path, x, tvm_fxp.Uniform(bits, per_channel_weights=per_channel), input_shape=input_shape,
                         progress=False)
    real_mod = q.realized()
    assert float_ops_in_integer_graph(real_mod) == []
    sim = tvm_fxp.Runner(tvm_fxp.build(q.simulated(), FAST_TARGET)).run(x)
    real = tvm_fxp.Runner(tvm_fxp.build(real_mod, FAST_TARGET)).run(x)
    np.testing.assert_array_equal(sim, real)
    return q, real


def _small_cnn(opset=13, dims=None, seed=0, size=8):
    g = Net([1, 3, size, size], seed=seed, opset=opset)
    x = g.op("Relu", [g.conv("input", 3, 4)])
    x = g.op("GlobalAveragePool", [g.conv(x, 4, 6, stride=2)])
    return g, g.model(g.fc(g.flatten(x), 6, 5), dims=dims)


# ---- malformed and unsupported models ------------------------------------------------------------------------

@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty", "not_a_model"])
def test_malformed_onnx_is_refused_with_the_file_named(tmp_path, damage):
    _, m = _small_cnn()
    data = m.SerializeToString()
    bad = tmp_path / f"{damage}.onnx"
    if damage == "truncated":
        bad.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        bad.write_bytes(os.urandom(64) + b"\xff" * 64)
    elif damage == "empty":
        bad.write_bytes(b"")
    else:   # a valid protobuf of another message: parses as a ModelProto without a graph
        bad.write_bytes(onnx.helper.make_tensor("t", onnx.TensorProto.FLOAT, [1], [1.0]).SerializeToString())
    with pytest.raises(tvm_fxp.ModelError, match=rf"{damage}.onnx.*(not a valid ONNX|empty graph|fails the ONNX "
                                                 r"checker)"):
        tvm_fxp.import_onnx(bad)


def test_unknown_custom_op_names_the_node(tmp_path):
    g = GraphBuilder([1, 2, 6, 6])
    x = g.conv("input", 2, 4)
    g.nodes.append(onnx.helper.make_node("FancyNorm", [x], ["y"], name="my_norm", domain="com.example"))
    inp = onnx.helper.make_tensor_value_info("input", onnx.TensorProto.FLOAT, ["N", 2, 6, 6])
    out = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["N", 4, 6, 6])
    m = onnx.helper.make_model(onnx.helper.make_graph(g.nodes, "g", [inp], [out], g.inits),
                               opset_imports=[onnx.helper.make_opsetid("", 13), onnx.helper.make_opsetid("com.example", 1)])
    with pytest.raises(tvm_fxp.ModelError, match=r"not supported for frontend ONNX: FancyNorm; nodes 'my_norm' "
                                                 r"\(FancyNorm\)"):
        tvm_fxp.import_onnx(save(m, tmp_path))


def test_standard_op_tvm_cannot_import_names_the_node(tmp_path):
    g = Net([1, 2, 6, 6])
    x = g.op("LpNormalization", [g.conv("input", 2, 4)], axis=1)
    with pytest.raises(tvm_fxp.ModelError, match=r"LpNormalization; nodes 'lpnormalization\d+' \(LpNormalization\)"):
        tvm_fxp.import_onnx(save(g.model(x), tmp_path))


def test_op_tvm_fxp_cannot_realize_names_the_node(tmp_path):
    g = Net([1, 2, 6, 6])
    x = g.op("Log", [g.conv("input", 2, 4)])     # no table form: log is not finite for x <= 0
    with pytest.raises(FxpGraphError, match=r"node \w+ \(relax.log\): op relax.log has no integer "
                                            r"realization in tvm-fxp; .* pass --allow-float-islands"):
        tvm_fxp.load_model(save(g.model(x), tmp_path))


@pytest.mark.parametrize("op", ["Sqrt"])
def test_float_island_when_allowed(tmp_path, op):
    """With ``allow_float_islands`` a square root (no table form: not finite for negative inputs; sigmoid, tanh,
    SiLU... are lookup tables, ``tests/passes/test_ops_detection.py``) between two convs stays in float64 between
    a dequantize and a quantize, in the simulation and the integer graph alike (bit-exact); the structural check reports exactly
    the island's float ops, ``float_islands`` and the report list it; without the flag the same model is
    refused (above)."""
    from tvm_fxp.passes import float_islands
    from tvm_fxp.report import markdown_report

    g = Net([1, 2, 6, 6])
    a, b = (g.op("Relu", [g.conv("input", 2, 2)]) for _ in range(2))
    pos = g.op("Concat", [a, b], axis=1)              # >= 0; a concat, so no table region reaches through it
    x = g.conv(g.op(op, [pos]), 4, 3)
    path = save(g.model(g.op("GlobalAveragePool", [x])), tmp_path)
    x = np.random.default_rng(0).normal(0, 1, (16, 2, 6, 6)).astype(np.float32)
    q = tvm_fxp.quantize(path, x, tvm_fxp.Uniform(8), allow_float_islands=True, progress=False)
    assert float_islands(q.graph) == [("float_0", f"relax.{op.lower()}")]
    real_mod = q.realized()
    bad = float_ops_in_integer_graph(real_mod)
    assert bad and {n for _, n, _ in bad} <= {"relax.astype", "relax.multiply", f"relax.{op.lower()}", "relax.abs",
                                                "relax.add", "relax.floor", "relax.sign", "relax.maximum",
                                                "relax.minimum"}
    assert f"relax.{op.lower()}" in {n for _, n, _ in bad}
    sim = tvm_fxp.Runner(tvm_fxp.build(q.simulated(), FAST_TARGET)).run(x)
    real = tvm_fxp.Runner(tvm_fxp.build(real_mod, FAST_TARGET)).run(x)
    np.testing.assert_array_equal(sim, real)
    assert np.unique(real).size > 8
    assert f"| float_0 | relax.{op.lower()} |" in markdown_report(q, {"method": "uniform"})


def test_activation_times_a_non_channel_constant_is_refused(tmp_path):
    g = Net([1, 2, 6, 6])
    mask = np.random.default_rng(0).random((1, 4, 6, 6)).astype(np.float32)   # per element, not per channel
    x = g.op("Mul", [g.op("Relu", [g.conv("input", 2, 4)]), g.const(mask)])
    with pytest.raises(FxpGraphError, match=r"multiply of a constant that is neither a layer bias nor a per-"
                                            r"channel/scalar affine"):
        tvm_fxp.load_model(save(g.model(x), tmp_path))


# ---- shapes -----------------------------------------------------------------------------------------------------

def test_dynamic_spatial_dims_need_input_shape(tmp_path):
    _, m = _small_cnn(dims=["N", 3, "H", "W"])
    path = save(m, tmp_path, "dyn.onnx")
    with pytest.raises(tvm_fxp.ModelError, match=r"dyn.onnx: input 'input' \['N', 3, 'H', 'W'\] has dynamic "
                                                 r"dimensions besides the batch: dim 2 \(H\), dim 3 \(W\); give a "
                                                 r"static shape with input_shape="):
        tvm_fxp.import_onnx(path)
    with pytest.raises(tvm_fxp.ModelError, match=r"input_shape \[1, 4, 8, 8\] disagrees with input 'input' .* at "
                                                 r"dims \[1\]"):
        tvm_fxp.import_onnx(path, input_shape=[1, 4, 8, 8])
    with pytest.raises(tvm_fxp.ModelError, match=r"has rank 4 .* input_shape \[3, 8, 8\] has rank 3"):
        tvm_fxp.import_onnx(path, input_shape=[3, 8, 8])
    x = np.random.default_rng(0).normal(0, 1, (3, 3, 8, 8)).astype(np.float32)
    q, out = _bit_exact(path, x, input_shape=[1, 3, 8, 8])
    assert q.graph.layers["input"].out_shape == (3, 8, 8) and out.shape == (3, 5)   # batch stays dynamic


def test_unknown_rank_input_needs_input_shape(tmp_path):
    _, m = _small_cnn()
    m.graph.input[0].type.tensor_type.ClearField("shape")
    path = save(m, tmp_path)
    with pytest.raises(tvm_fxp.ModelError, match=r"input 'input' has an unknown rank; give its shape with "
                                                 r"input_shape="):
        tvm_fxp.import_onnx(path)
    prepared, lg = tvm_fxp.load_model(path, input_shape=[1, 3, 8, 8])
    assert lg.layers["input"].out_shape == (3, 8, 8)


# ---- weights and calibration data -------------------------------------------------------------------------------

@pytest.mark.filterwarnings("ignore:.*encountered in divide:RuntimeWarning")   # the importer folds 0/0, 1/0
@pytest.mark.parametrize("where", ["initializer", "constant_node", "constant_subgraph"])
@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_nan_inf_weights_are_refused(tmp_path, where, value):
    weights = {"initializer": "initializer", "constant_node": "constant", "constant_subgraph": "initializer"}[where]
    g = Net([1, 2, 6, 6], weights=weights)
    x = g.conv("input", 2, 4)
    if where == "constant_subgraph":    # a weight computed as 0/0 or 1/0 by constant ops
        w = g.op("Div", [g.const(np.full((3, 4, 1, 1), 0.0 if np.isnan(value) else 1.0)), g.const(np.zeros(1))])
        x = g.op("Conv", [x, w], kernel_shape=[1, 1])
    m = g.model(x)
    if where == "initializer":
        w = onnx.numpy_helper.to_array(m.graph.initializer[0]).copy()
        w[0, 0, 0, 0] = value
        m.graph.initializer[0].CopyFrom(onnx.numpy_helper.from_array(w, m.graph.initializer[0].name))
    elif where == "constant_node":
        node = next(n for n in m.graph.node if n.op_type == "Constant")
        w = onnx.numpy_helper.to_array(node.attribute[0].t).copy()
        w.reshape(-1)[0] = value
        node.attribute[0].t.CopyFrom(onnx.numpy_helper.from_array(w, node.attribute[0].t.name))
    path = save(m, tmp_path)
    if where == "constant_subgraph":
        with pytest.raises(FxpGraphError, match=r"node \w+ \(relax.nn.conv2d\): weights contain NaN/inf"):
            tvm_fxp.load_model(path)
    else:
        with pytest.raises(tvm_fxp.ModelError, match=r"(initializer 'w\d+'|Constant node '\w+') contains NaN/inf"):
            tvm_fxp.import_onnx(path)


def test_constant_tensors_quantize_exactly(tmp_path):
    """Zero weights, an all-zero (dead) activation and constant inputs: zero-range formats still realize."""
    g = Net([1, 2, 6, 6])
    dead = g.op("Relu", [g.op("Mul", [g.conv("input", 2, 3, bias=False), g.const(np.zeros((1, 3, 1, 1)))])])
    live = g.conv("input", 2, 3)
    x = g.op("Concat", [dead, live], axis=1)
    path = save(g.model(g.op("GlobalAveragePool", [x])), tmp_path)
    for inputs in (np.zeros((4, 2, 6, 6), np.float32), np.full((4, 2, 6, 6), 0.75, np.float32)):
        q, out = _bit_exact(path, inputs)
        assert np.all(q.graph.layers["conv2d_0"].weight == 0)
        assert np.all(out[:, :3] == 0)                                      # the dead half stays exactly 0
        assert np.all(out == out[:1])                                       # constant input, constant output


def test_one_calibration_image(tmp_path):
    g, m = _small_cnn()
    path = save(m, tmp_path)
    one = np.random.default_rng(3).normal(0, 1, (1, 3, 8, 8)).astype(np.float32)
    q, _ = _bit_exact(path, one)
    more = np.random.default_rng(4).normal(0, 2, (16, 3, 8, 8)).astype(np.float32)   # beyond its range
    sim = tvm_fxp.Runner(tvm_fxp.build(q.simulated(), FAST_TARGET)).run(more)
    real = tvm_fxp.Runner(tvm_fxp.build(q.realized(), FAST_TARGET)).run(more)
    np.testing.assert_array_equal(sim, real)


# ---- budgets and plans -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("bits", [1, 0, -3, 17])
def test_impossible_uniform_budget(bits):
    with pytest.raises(MethodError, match=r"--bits must be an integer in 2..16, got"):
        tvm_fxp.Uniform(bits)


def test_one_bit_formats(tmp_path):
    """A signed 1-bit format cannot exist (the sign takes the bit); an unsigned 1-bit activation (0 or 2**-f)
    is legal and realizes exactly."""
    with pytest.raises(FormatError, match="a signed format needs at least 2 bits"):
        FixedPointFormat(1, 0, signed=True)
    g, m = _small_cnn()
    path = save(m, tmp_path)
    x = np.random.default_rng(0).normal(0, 1, (6, 3, 8, 8)).astype(np.float32)
    q = tvm_fxp.quantize(path, x, tvm_fxp.Uniform(8), progress=False)
    plan = q.plan.with_format("conv2d_0.output", FixedPointFormat(1, 0, signed=False))
    b = plan["conv2d_1.bias"]     # the next layer's accumulator is now at 0 + f_w: its bias may not be finer
    plan = plan.with_format("conv2d_1.bias", FixedPointFormat(b.bits, min(b.frac, plan["conv2d_1.weight"].frac)))
    q1 = tvm_fxp.bind_plan(q.prepared, q.graph, plan)
    sim = tvm_fxp.Runner(tvm_fxp.build(q1.simulated(), FAST_TARGET)).run(x)
    real = tvm_fxp.Runner(tvm_fxp.build(q1.realized(), FAST_TARGET)).run(x)
    np.testing.assert_array_equal(sim, real)
    assert not np.array_equal(real, tvm_fxp.Runner(tvm_fxp.build(q.realized(), FAST_TARGET)).run(x))


def test_plan_json_from_another_model_is_refused(tmp_path):
    g1, m1 = _small_cnn(seed=1)
    g2 = Net([1, 3, 8, 8], seed=2)
    m2 = g2.model(g2.op("GlobalAveragePool", [g2.op("Relu", [g2.conv("input", 3, 4)])]))
    x = np.random.default_rng(0).normal(0, 1, (4, 3, 8, 8)).astype(np.float32)
    q = tvm_fxp.quantize(save(m1, tmp_path, "a.onnx"), x, progress=False)
    q.plan.save(tmp_path / "plan_a.json")
    plan = Plan.load(tmp_path / "plan_a.json")
    prepared, lg = tvm_fxp.load_model(save(m2, tmp_path, "b.onnx"))
    with pytest.raises(PlanError, match=r"plan does not match this model: .*unknown tensors \['conv2d_1.bias', "
                                        r"'conv2d_1.output', 'conv2d_1.weight', 'matmul_0.bias'.*another model"):
        tvm_fxp.bind_plan(prepared, lg, plan)
    from tvm_fxp.passes import Annotate
    with pytest.raises(PlanError, match="does not match this model"):
        Annotate(tmp_path / "plan_a.json")(prepared)
    bad = json.loads((tmp_path / "plan_a.json").read_text())
    bad["tensors"]["conv2d_0.weight"]["frac"] = [1, 2]
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    with pytest.raises(PlanError, match=r"plan file .*bad.json: tensor 'conv2d_0.weight': a per-channel format "
                                        r"needs an axis"):
        Plan.load(tmp_path / "bad.json")


def test_requantize_shifts_beyond_the_format_width(tmp_path):
    """Found by the random suite: a requantize whose left shift exceeds the format's width (negative values
    must saturate to qmin, not to 0), and one whose right shift exceeds the accumulator's width (an average pool
    into a very coarse format)."""
    x = np.random.default_rng(0).normal(0, 2, (8, 2, 5, 5)).astype(np.float32)
    g = Net([1, 2, 5, 5])
    conv_only = save(g.model(g.conv("input", 2, 3)), tmp_path, "conv.onnx")
    q = tvm_fxp.quantize(conv_only, x, tvm_fxp.Uniform(8), progress=False)
    acc = q.plan["input"].frac + q.plan["conv2d_0.weight"].frac
    fine = FixedPointFormat(8, acc + 12)                                  # left shift 12 > 8 bits
    qp = tvm_fxp.bind_plan(q.prepared, q.graph, q.plan.with_format("conv2d_0.output", fine))
    for target in (FAST_TARGET, None):
        sim = tvm_fxp.Runner(tvm_fxp.build(qp.simulated(), target)).run(x)
        real = tvm_fxp.Runner(tvm_fxp.build(qp.realized(), target)).run(x)
        np.testing.assert_array_equal(sim, real)
    stored = output_integers(real, fine.frac)
    assert {fine.qmin, fine.qmax} <= set(np.unique(stored)) <= {fine.qmin, 0, fine.qmax}   # nonzero values saturate

    g = Net([1, 2, 5, 5])
    pooled = save(g.model(g.op("GlobalAveragePool", [g.conv("input", 2, 3)])), tmp_path, "pool.onnx")
    q = tvm_fxp.quantize(pooled, x, tvm_fxp.Uniform(8), progress=False)
    coarse = FixedPointFormat(4, q.plan["conv2d_0.output"].frac - 20)     # right shift (f + 20) - (f - 20) = 40
    qp = tvm_fxp.bind_plan(q.prepared, q.graph, q.plan.with_format("mean_0.output", coarse))
    for target in (FAST_TARGET, None):
        sim = tvm_fxp.Runner(tvm_fxp.build(qp.simulated(), target)).run(x)
        real = tvm_fxp.Runner(tvm_fxp.build(qp.realized(), target)).run(x)
        np.testing.assert_array_equal(sim, real)
        assert np.all(real == 0)


# ---- random graphs: simulation == realization, bit for bit -------------------------------------------------------

OPS = ("conv", "conv", "add", "concat", "maxpool", "avgpool", "relu", "gap", "fc", "shuffle", "mul")


@st.composite
def random_case(draw, max_ops=2):
    """One small graph: its input shape, a chain of 1..max_ops ops (some with a side branch), the input scale
    and a seed for its weights, formats and input data."""
    c, hw = draw(st.sampled_from([2, 4])), draw(st.sampled_from([5, 6]))
    C, H = c, hw
    ops, flat = [], False
    for _ in range(draw(st.integers(1, max_ops))):
        op = draw(st.sampled_from(("fc", "relu") if flat else OPS))
        if op == "shuffle" and C % 2:
            op = "relu"
        if op in ("maxpool", "avgpool") and H < 2:
            op = "gap"
        spec = {"op": op}
        if op == "conv":
            k = draw(st.sampled_from([1, 3])) if H >= 3 else 1
            s, g = draw(st.sampled_from([1, 2])), draw(st.sampled_from([1, C]))
            p = draw(st.sampled_from([0, 1])) if k == 3 else 0
            spec.update(k=k, s=s, p=p, g=g, cout=draw(st.sampled_from([2, 4])) if g == 1 else C,
                        bias=draw(st.booleans()), act=draw(st.sampled_from(["none", "relu", "relu6", "clip1"])))
            C, H = spec["cout"], (H + 2 * p - k) // s + 1
        elif op in ("maxpool", "avgpool"):
            k = draw(st.sampled_from([2, 3])) if H >= 3 else 2
            s, p = draw(st.sampled_from([1, 2])), draw(st.sampled_from([0, 1]))
            spec.update(k=k, s=s, p=p, cip=draw(st.sampled_from([0, 1])))
            H = (H + 2 * p - k) // s + 1
        elif op == "concat":
            spec.update(self_branch=draw(st.booleans()))
            C = C + 2 if spec["self_branch"] else 4
        elif op == "add":
            spec.update(n=draw(st.sampled_from([2, 3])), act=draw(st.sampled_from(["none", "relu"])))
        elif op == "gap":
            H = 1
        elif op == "fc":
            spec.update(n=draw(st.sampled_from([2, 4])), kind=draw(st.sampled_from(["gemm", "matmul"])))
            C, flat = spec["n"], True
        ops.append(spec)
    return {"c": c, "hw": hw, "ops": ops, "sigma": draw(st.sampled_from([0.25, 1.0, 4.0])),
            "seed": draw(st.integers(0, 2 ** 31 - 1))}


def _build_case(g: GraphBuilder, x: str, case: dict) -> str:
    C, H, flat = case["c"], case["hw"], False
    g.rng = np.random.default_rng(case["seed"])
    for spec in case["ops"]:
        op = spec["op"]
        if op == "conv":
            x = g.conv(x, C, spec["cout"], k=spec["k"], stride=spec["s"], pad=spec["p"], groups=spec["g"],
                       bias=spec["bias"])
            if spec["act"] == "relu":
                x = g.op("Relu", [x])
            elif spec["act"] != "none":
                lo, hi = (0.0, 6.0) if spec["act"] == "relu6" else (-1.0, 1.0)
                x = g.op("Clip", [x, g.const(np.float32(lo)), g.const(np.float32(hi))])
            C, H = spec["cout"], (H + 2 * spec["p"] - spec["k"]) // spec["s"] + 1
        elif op in ("maxpool", "avgpool"):
            attrs = {"count_include_pad": spec["cip"]} if op == "avgpool" else {}
            x = g.op("MaxPool" if op == "maxpool" else "AveragePool", [x], kernel_shape=[spec["k"]] * 2,
                     strides=[spec["s"]] * 2, pads=[spec["p"]] * 4, **attrs)
            H = (H + 2 * spec["p"] - spec["k"]) // spec["s"] + 1
        elif op == "relu":
            x = g.op("Relu", [x])
        elif op == "gap":
            x, H = g.op("GlobalAveragePool", [x]), 1
        elif op == "shuffle":
            y = g.op("Reshape", [x, _i64(g, [0, 2, C // 2, H, H])])
            x = g.op("Reshape", [g.op("Transpose", [y], perm=[0, 2, 1, 3, 4]), _i64(g, [0, C, H, H])])
        elif op == "concat":
            a = g.conv(x, C, 2, k=3 if H >= 3 else 1, pad=1 if H >= 3 else 0)
            b = x if spec["self_branch"] else g.op("Relu", [g.conv(x, C, 2, k=1, pad=0)])
            x = g.op("Concat", [b, a], axis=1)
            C = C + 2 if spec["self_branch"] else 4
        elif op == "add":
            ys = [x] + [g.conv(x, C, C, k=1, pad=0) for _ in range(spec["n"] - 1)]
            x = g.op("Sum" if spec["n"] > 2 else "Add", ys)
            if spec["act"] == "relu":
                x = g.op("Relu", [x])
        elif op == "mul":
            x = g.op("Mul", [x, g.op("Relu", [g.conv(x, C, C, k=1, pad=0)])])
        elif op == "fc":
            k = C if flat else C * H * H
            if not flat:
                x, flat = g.op("Flatten", [x]), True
            if spec["kind"] == "gemm":
                x = g.gemm(x, k, spec["n"])
            else:
                w = g.rng.normal(0, np.sqrt(2 / k), (k, spec["n"]))
                x = g.op("Add", [g.op("MatMul", [x, g.const(w)]), g.const(g.rng.normal(0, 0.1, spec["n"]))])
            C = spec["n"]
    return x


def _i64(g: GraphBuilder, v):
    name = g._name("shape")
    g.inits.append(onnx.numpy_helper.from_array(np.array(v, np.int64), name))
    return name


def _random_plan(lg, cases, key_of_input) -> Plan:
    """Formats for every tensor of every case, from the case's seed: bits 2..16, signed or not, frac near the
    one its expected range asks for (so values round, saturate, or underflow to zero)."""
    tensors = {}
    for i, case in enumerate(cases):
        rng = np.random.default_rng(case["seed"] + 7)
        start = key_of_input(i)
        for name in [start] + [n for n in nx.topological_sort(lg.graph) if n in nx.descendants(lg.graph, start)]:
            layer = lg.layers[name]
            bits, signed = int(rng.integers(2, 17)), bool(rng.random() < 0.75)
            scale = case["sigma"] * 3 * 2.0 ** int(rng.integers(-2, 3))
            tensors[layer.output_key] = FixedPointFormat(
                bits, int(frac_for_range(scale, bits, signed)) + int(rng.integers(-1, 2)), signed)
            if layer.weight is None:
                continue
            wbits, per_channel = int(rng.integers(2, 17)), bool(rng.random() < 0.5)
            axis = layer.weight_axis
            if per_channel:
                cam = np.moveaxis(np.abs(layer.weight), axis, 0).reshape(layer.channels, -1).max(axis=1)
                fr = frac_for_range(cam, wbits, True) + rng.integers(-1, 2, layer.channels)
                w_fmt = FixedPointFormat(wbits, tuple(int(f) for f in fr), True, axis)
            else:
                w_fmt = FixedPointFormat(wbits, int(frac_for_range(float(np.abs(layer.weight).max()), wbits, True))
                                         + int(rng.integers(-1, 2)), True)
            tensors[layer.weight_key] = w_fmt
            if layer.bias is not None:
                acc = tensors[lg.layers[layer.inputs[0]].output_key].frac + min(w_fmt.frac_list)
                bbits = int(rng.integers(2, 17))
                bf = int(frac_for_range(float(np.abs(layer.bias).max()), bbits, True)) + int(rng.integers(-1, 2))
                tensors[layer.bias_key] = FixedPointFormat(bbits, min(bf, acc), True)
    return Plan(tensors, method="random")


def _shared_kernels(mod):
    """Scalar constants as 1-element tensors.  TVM's legalization writes a 0-d constant into the kernel, so
    every format (every shift amount, bound and scale) compiles its own kernel; as a tensor it is an argument and
    kernels of one shape are shared.  The values and the arithmetic are unchanged."""
    keep = {"relax.astype", "relax.reshape", "relax.take", "relax.sum", "relax.mean"}

    def lift(e):
        return relax.const(const_np(e).reshape(1), str(e.ty.dtype)) if is_const(e) and const_np(e).ndim == 0 else e

    def rule(bb, b, value, env):
        if isinstance(value, relax.Call) and isinstance(value.op, tvm.ir.Op) and value.op.name not in keep:
            return relax.Call(value.op, [lift(a) for a in value.args], value.attrs, value.ty_args)
        return value

    return tvm.IRModule({"main": rebuild_function(mod["main"], rule)})


def _load_vm(mod, workdir, name, fast):
    """Build, export and load (faster than LLVM's JIT); ``fast``: shared kernels at ``opt-level=0``."""
    path = os.path.join(workdir, f"{name}.so")
    ex = tvm_fxp.build(_shared_kernels(mod), FAST_TARGET) if fast else tvm_fxp.build(mod)
    ex.export_library(path)
    return relax.VirtualMachine(tvm.runtime.load_module(path), tvm.cpu())


def check_random_cases(cases, fast=True) -> dict:
    """Build every case into one model, quantize with random formats, and compare the simulated and the
    realized outputs of every case bit for bit.  Returns counts for the caller's totals."""
    batch = 2 if fast else "N"
    with tempfile.TemporaryDirectory() as d:
        g = GraphBuilder([1, 1, 1, 1])
        outs = [_build_case(g, f"x{i}", c) for i, c in enumerate(cases)]
        model = multi_io_model(g, [(f"x{i}", [batch, c["c"], c["hw"], c["hw"]]) for i, c in enumerate(cases)], outs)
        path = os.path.join(d, "random.onnx")
        onnx.save(model, path)
        prepared, lg = tvm_fxp.load_model(path)
        assert len(lg.outputs) == len(cases)
        key_of_input = (lambda i: "input") if len(cases) == 1 else (lambda i: f"input_x{i}")
        plan = _random_plan(lg, cases, key_of_input)
        q = tvm_fxp.bind_plan(prepared, lg, plan)
        real_mod = q.realized()
        assert float_ops_in_integer_graph(real_mod) == []
        sim = _load_vm(q.simulated(), d, "sim", fast)
        real = _load_vm(real_mod, d, "real", fast)
        xs = [np.random.default_rng(c["seed"] + 1).normal(0, c["sigma"], (2, c["c"], c["hw"], c["hw"]))
              .astype(np.float32) for c in cases]
        args = [tvm.runtime.tensor(x) for x in xs]
        a, b = sim["main"](*args), real["main"](*args)
        if len(cases) == 1:
            a, b = [a], [b]
        nontrivial = 0
        for i, case in enumerate(cases):
            ai, bi = a[i].numpy(), b[i].numpy()
            if not np.array_equal(ai, bi):
                layers = [key_of_input(i)] + sorted(nx.descendants(lg.graph, key_of_input(i)))
                fmts = {k: str(f) for k, f in plan.tensors.items() if k.split(".")[0] in layers}
                pytest.fail(f"case {i}: simulation != integer graph on {int(np.sum(ai != bi))} of {ai.size} values\n"
                            f"case: {case}\nformats: {fmts}\nsimulated: {ai.ravel()[:8]}\nrealized: {bi.ravel()[:8]}")
            out_fmt = plan[lg.layers[lg.outputs[i]].output_key]
            nontrivial += np.unique(output_integers(bi, out_fmt.frac)).size > 1
    return {"cases": len(cases), "nontrivial": nontrivial}


CASES_PER_EXAMPLE = 250      # one compiled module per example


def _random_graphs(examples: int):
    totals = {"cases": 0, "nontrivial": 0}

    @settings(max_examples=examples, deadline=None, derandomize=True, database=None,
              phases=(Phase.explicit, Phase.generate), suppress_health_check=list(HealthCheck))
    @given(st.lists(random_case(), min_size=CASES_PER_EXAMPLE, max_size=CASES_PER_EXAMPLE))
    def check(cases):
        for k, v in check_random_cases(cases).items():
            totals[k] += v

    check()
    assert totals["cases"] >= examples * CASES_PER_EXAMPLE, totals
    assert totals["nontrivial"] >= 0.6 * totals["cases"], totals   # most cases are not saturated to a constant


def test_random_graphs_simulation_equals_realization():
    """250 random cases in the default run (one compiled module); 1,000 in the slow run."""
    _random_graphs(1)


@pytest.mark.slow
def test_random_graphs_simulation_equals_realization_1000_cases():
    _random_graphs(4)


@pytest.mark.slow
def test_random_graphs_simulation_equals_realization_production_build():
    """Longer graphs, dynamic batch, the production build (host target, tvm_fxp.build)."""
    totals = {"cases": 0, "nontrivial": 0}

    @settings(max_examples=10, deadline=None, database=None, phases=(Phase.explicit, Phase.generate),
              suppress_health_check=list(HealthCheck))
    @given(st.lists(random_case(max_ops=4), min_size=100, max_size=100))
    def check(cases):
        for k, v in check_random_cases(cases, fast=False).items():
            totals[k] += v

    check()
    assert totals["cases"] >= 1000, totals


def test_impossible_method_budgets(tmp_path):
    """An accumulator no configuration fits is refused naming the layer and what to change; budgets outside
    their domain are refused before any work."""
    from tvm_fxp.methods.debruin2020 import DeBruin2020
    from tvm_fxp.methods.goyal2021 import Goyal2021
    from tvm_fxp.methods.lin2016 import Lin2016

    g = Net([1, 3, 8, 8])
    path = save(g.model(g.op("GlobalAveragePool", [g.conv(g.op("Relu", [g.conv("input", 3, 8)]), 8, 8)])), tmp_path)
    x = np.random.default_rng(0).normal(0, 1, (8, 3, 8, 8)).astype(np.float32)
    with pytest.raises(MethodError, match=r"debruin2020: layer conv2d_0 \(fan-in 27\) has no configuration with >= "
                                          r"4-bit operands that provably fits a 8-bit accumulator; raise --acc-bits"):
        tvm_fxp.quantize(path, x, DeBruin2020(acc_bits=8, min_bits=4), progress=False, time_limit=5)
    with pytest.raises(MethodError, match=r"--acc-bits must be in 8..32, got 4"):
        DeBruin2020(acc_bits=4)
    with pytest.raises(MethodError, match=r"goyal2021: budget must be a fraction in \[0, 1\), got 1.5"):
        Goyal2021(budget=1.5)
    with pytest.raises(MethodError, match=r"lin2016: bit-widths must lie in 2..16"):
        Lin2016(min_bits=1)
