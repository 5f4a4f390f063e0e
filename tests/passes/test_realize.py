"""Realize vs Simulate (bit for bit) and vs an independent numpy int64 reference, op by op."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tvm_fxp
from tvm_fxp.api import output_integers
from tvm_fxp.formats import FixedPointFormat, rounding_right_shift
from tvm_fxp.passes import float_ops_in_integer_graph
from tvm_fxp.passes.realize import realized_accumulators
from onnx_graphs import GraphBuilder, save


def quantize_and_compare(path, bits, inputs, per_channel=False):
    q = tvm_fxp.quantize(path, inputs, tvm_fxp.Uniform(bits, per_channel_weights=per_channel), progress=False)
    real_mod = q.realized()
    assert float_ops_in_integer_graph(real_mod) == []
    sim = tvm_fxp.Runner(tvm_fxp.build(q.simulated())).run(inputs)
    real = tvm_fxp.Runner(tvm_fxp.build(real_mod)).run(inputs)
    out_fmt = q.plan[q.graph.layers[q.graph.output].output_key]
    np.testing.assert_array_equal(output_integers(sim, out_fmt.frac), output_integers(real, out_fmt.frac))
    assert np.array_equal(sim, real)
    return q, real


def _residual(g):
    a = g.op("Relu", [g.conv("input", 4, 8)])
    b = g.conv(a, 8, 8)
    s = g.op("Relu", [g.op("Add", [a, b])])
    return s


def _concat(g):
    a = g.op("Relu", [g.conv("input", 4, 6, k=1, pad=0)])
    b = g.conv("input", 4, 5)
    return g.op("Concat", [a, b], axis=1)


def _pools(g):
    a = g.op("Relu", [g.conv("input", 4, 8)])
    p = g.op("AveragePool", [a], kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1], count_include_pad=1)
    m = g.op("MaxPool", [p], kernel_shape=[2, 2], strides=[2, 2])
    q = g.op("AveragePool", [m], kernel_shape=[2, 2], strides=[2, 2])
    gap = g.op("GlobalAveragePool", [q])
    return g.gemm(g.op("Flatten", [gap]), 8, 3)


def _depthwise_strided(g):
    a = g.op("Clip", [g.conv("input", 4, 4, k=3, stride=2, pad=1, groups=4), g.const(0.0), g.const(6.0)])
    b = g.conv(a, 4, 8, k=1, pad=0)
    c = g.conv(b, 8, 8, k=3, stride=1, pad=0, groups=2)
    return g.gemm(g.op("Flatten", [c]), 8 * 3 * 3, 5)


def _gap7(g):  # global average over 7x7: a non-power-of-two count uses the multiplier
    a = g.op("Relu", [g.conv("input", 4, 6, stride=1, pad=0)])
    return g.op("GlobalAveragePool", [a])


GRAPHS = {"residual": (_residual, [1, 4, 8, 8]), "concat": (_concat, [1, 4, 8, 8]),
          "pools": (_pools, [1, 4, 8, 8]), "depthwise_strided": (_depthwise_strided, [1, 4, 10, 10]),
          "gap7": (_gap7, [1, 4, 9, 9])}


@pytest.mark.parametrize("bits", [4, 8, 16])
@pytest.mark.parametrize("graph", sorted(GRAPHS))
def test_ops_bit_exact(tmp_path, rng, graph, bits):
    build, shape = GRAPHS[graph]
    g = GraphBuilder(shape, seed=hash(graph) % 1000)
    path = save(g.model(build(g)), tmp_path)
    inputs = rng.normal(0, 1, (16,) + tuple(shape[1:])).astype(np.float32)
    quantize_and_compare(path, bits, inputs, per_channel=(bits == 8))


def conv2d_int64(x, w, stride, pad, groups):
    """Independent numpy int64 reference of an NCHW/OIHW conv2d."""
    x = np.pad(x.astype(np.int64), ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    n, cin, h, wd = x.shape
    cout, cg, kh, kw = w.shape
    oh, ow = (h - kh) // stride + 1, (wd - kw) // stride + 1
    out = np.zeros((n, cout, oh, ow), dtype=np.int64)
    og = cout // groups
    for gi in range(groups):
        xs = x[:, gi * cg:(gi + 1) * cg]
        ws = w[gi * og:(gi + 1) * og].astype(np.int64)
        for i in range(kh):
            for j in range(kw):
                patch = xs[:, :, i:i + stride * oh:stride, j:j + stride * ow:stride]
                out[:, gi * og:(gi + 1) * og] += np.einsum("nchw,oc->nohw", patch, ws[:, :, i, j])
    return out


def requantize_int64(acc, acc_frac, fmt: FixedPointFormat):
    s = np.asarray(acc_frac) - fmt.frac
    shifted = np.where(s >= 0, rounding_right_shift(acc, np.maximum(s, 0)), acc << np.maximum(-s, 0))
    return np.clip(shifted, fmt.qmin, fmt.qmax)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cin=st.sampled_from([1, 2, 4]), mult=st.sampled_from([1, 2]), k=st.sampled_from([1, 3]),
       stride=st.sampled_from([1, 2]), pad=st.sampled_from([0, 1]), depthwise=st.booleans(),
       bits=st.sampled_from([3, 5, 8, 12]), relu=st.booleans(), seed=st.integers(0, 1000))
def test_conv_layer_matches_numpy_int64_reference(tmp_path, cin, mult, k, stride, pad, depthwise, bits, relu, seed):
    groups = cin if depthwise else 1
    cout = cin * mult
    g = GraphBuilder([1, cin, 7, 7], seed=seed)
    y = g.conv("input", cin, cout, k=k, stride=stride, pad=pad, groups=groups)
    if relu:
        y = g.op("Relu", [y])
    path = save(g.model(y), tmp_path, f"c{seed}.onnx")
    x = np.random.default_rng(seed).normal(0, 1, (6, cin, 7, 7)).astype(np.float32)
    q, real = quantize_and_compare(path, bits, x)
    layer = q.graph.layers["conv2d_0"]
    f_in, f_w, f_out = q.plan["input"], q.plan["conv2d_0.weight"], q.plan["conv2d_0.output"]
    xq, wq = f_in.quantize(x), f_w.quantize(layer.weight)
    acc_frac = f_in.frac + f_w.frac
    acc = conv2d_int64(xq, wq, stride, pad, groups)
    f_b = q.plan["conv2d_0.bias"]
    acc += (f_b.quantize(layer.bias) << (acc_frac - f_b.frac)).reshape(1, -1, 1, 1)
    if relu:
        acc = np.maximum(acc, 0)
    expected = requantize_int64(acc, acc_frac, f_out)
    np.testing.assert_array_equal(output_integers(real, f_out.frac), expected)


def test_narrow_accumulators_only_where_proven(tmp_path, calib_images, test_images):
    """Realize(accumulator="narrow") uses int16 exactly for the layers whose bound is below 2**15."""
    from conftest import model_path
    from tvm_fxp.passes.relax_utils import main_bindings, op_name

    x = test_images.inputs[:200]
    q = tvm_fxp.quantize(model_path("fmnist_vgg"), calib_images[:64], tvm_fxp.Uniform(4), progress=False)
    w = q.plan["conv2d_1.weight"]   # one layer with wider weights: its accumulator no longer fits 16 bits
    for extra in (4, 6, 8):
        wide_w = q.with_plan(q.plan.with_format("conv2d_1.weight", FixedPointFormat(4 + extra, w.frac + extra)))
        if wide_w.arithmetic["conv2d_1"].bound.bits > 16:
            break
    q = wide_w
    assert q.arithmetic["conv2d_1"].bound.bits > 16
    narrow = q.realized(accumulator="narrow")
    chosen = realized_accumulators(narrow)
    for name, a in q.arithmetic.items():
        if a.wq is not None:
            assert (chosen[name] == "int16") == (a.bound.bits <= 16), (name, chosen[name], a.bound.bits)
    assert chosen["conv2d_1"] != "int16" and "int16" in chosen.values()
    acc_dtypes = {str(b.var.ty.dtype) for b in main_bindings(narrow["main"])
                  if op_name(b.value) in ("relax.nn.conv2d", "relax.matmul")}
    assert acc_dtypes == {"int16"} if chosen["conv2d_1"].startswith("int16") else {"int16", "int32"}
    wide = tvm_fxp.Runner(tvm_fxp.build(q.realized())).run(x)
    np.testing.assert_array_equal(tvm_fxp.Runner(tvm_fxp.build(narrow)).run(x), wide)


@pytest.mark.parametrize("model", ["fmnist_vgg", pytest.param("fmnist_resnet", marks=pytest.mark.slow)])
def test_k_tiled_int16_partial_sums(model, calib_images, test_images):
    """Layers whose full bound needs more than 16 bits but whose input channels split into ranges with
    provably int16-safe partial sums are accumulated as int16 tiles widened into int32 (``narrow`` policy):
    bit-exact with the simulation; every tile's partial sums, observed on real and adversarial inputs with the
    tile convolutions widened to int32, stay inside int16; the choice is recorded per layer."""
    import tvm
    from tvm import relax
    from conftest import model_path
    from tvm_fxp.passes.emitters import rebuild_weighted
    from tvm_fxp.passes.relax_utils import main_bindings, op_name
    from rebuild import rebuild_function

    q = tvm_fxp.quantize(model_path(model), calib_images[:64], tvm_fxp.Uniform(6), progress=False)
    narrow = q.realized(accumulator="narrow")
    chosen = realized_accumulators(narrow)
    tiled = {k: v for k, v in chosen.items() if "k-tiles" in v}
    assert len(tiled) >= 2, chosen
    for name, how in tiled.items():
        assert q.arithmetic[name].bound.bits > 16                 # the whole layer would not fit int16
    x = test_images.inputs[:200]
    sim = tvm_fxp.Runner(tvm_fxp.build(q.simulated())).run(x)
    np.testing.assert_array_equal(tvm_fxp.Runner(tvm_fxp.build(narrow)).run(x), sim)

    # observe every int16 tile sum with the same convolution done in int32
    func = narrow["main"]
    parts = [b.var for b in main_bindings(func) if op_name(b.value) in ("relax.nn.conv2d", "relax.matmul")
             and "_k" in b.var.name]
    assert parts

    def widen(bb, b, value, env):
        return rebuild_weighted(value, value.args[0], value.args[1], "int32") if b.var in parts else value

    probe = tvm.IRModule({"main": rebuild_function(
        func, widen, epilogue=lambda bb, r, env: relax.Tuple([env[p] for p in parts]))})
    vm = relax.VirtualMachine(tvm_fxp.build(probe), tvm.cpu())
    rng = np.random.default_rng(0)
    for data in (x, rng.random((64, 1, 28, 28), dtype=np.float32),        # real, uniform noise
                 np.where(rng.random((64, 1, 28, 28)) < 0.5, 0.0, 1.0).astype(np.float32)):  # saturating
        outs = vm["main"](tvm.runtime.tensor(data))
        for p, o in zip(parts, outs):
            assert np.abs(o.numpy()).max() < 1 << 15, p.name
