"""The ops of detection and segmentation networks, integer-only: each against a numpy int64 reference over random
shapes and formats (Hypothesis), the simulation equal to the integer graph bit for bit, no float op between
the input quantize and the output dequantize; each table function exhaustively over its input format's
integers against float64 within its stated error bound."""

from __future__ import annotations

import math

import numpy as np
import onnx
import pytest
import tvm
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

import tvm_fxp
from tvm_fxp.api import output_integers
from tvm_fxp.formats import FixedPointFormat, rounding_right_shift
from tvm_fxp.passes import float_ops_in_integer_graph

from onnx_graphs import nodes_model

FAST_TARGET = tvm.target.Target({"kind": "llvm", "opt-level": 0})
SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def _i64(name, v):
    return numpy_helper.from_array(np.asarray(v, np.int64), name)


def _run(tmp_path, model, xs, bits):
    """Quantize (uniform ``bits``), realize; check integer-only and simulation == integer graph; return
    ``(q, outputs of the integer graph)``."""
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    q = tvm_fxp.quantize(path, xs if len(xs) > 1 else xs[0], tvm_fxp.Uniform(bits), progress=False)
    real_mod = q.realized()
    assert float_ops_in_integer_graph(real_mod) == []
    sim = tvm_fxp.Runner(tvm_fxp.build(q.simulated(), FAST_TARGET)).run(xs)
    real = tvm_fxp.Runner(tvm_fxp.build(real_mod, FAST_TARGET)).run(xs)
    sim, real = (sim, real) if isinstance(real, list) else ([sim], [real])
    for a, b in zip(sim, real):
        np.testing.assert_array_equal(a, b)
    return q, real


def _out_fmt(q, i=0):
    return q.plan[q.graph.layers[q.graph.outputs[i]].output_key]


# ---- selection ops: the integer graph applies numpy's own op to the stored input integers -----------------------

@st.composite
def slices(draw):
    shape = [draw(st.integers(1, 3)), draw(st.integers(2, 6)), draw(st.integers(2, 7))]
    axes = draw(st.lists(st.integers(-3, 2), min_size=1, max_size=3, unique_by=lambda a: a % 3))
    starts, ends, steps = [], [], []
    for a in axes:
        d = shape[a % 3]
        step = draw(st.sampled_from([1, 2, 3, -1, -2]))
        start, end = draw(st.integers(-d, d - 1)), draw(st.integers(-d - 1, d))
        if len(range(*slice(start, end, step).indices(d))) == 0:
            start, end = (0, d) if step > 0 else (d - 1, -d - 1)
        starts.append(start), ends.append(end), steps.append(step)
    return shape, axes, starts, ends, steps


@settings(max_examples=6, **SETTINGS)
@given(case=slices(), bits=st.sampled_from([3, 6, 8, 12]), seed=st.integers(0, 99))
def test_slice_any_axis_steps_negative_indices(tmp_path, case, bits, seed):
    shape, axes, starts, ends, steps = case
    nodes = [helper.make_node("Slice", ["x", "s", "e", "a", "t"], ["y"]),
             helper.make_node("Transpose", ["y"], ["z"], perm=[0, 3, 1, 2]),
             helper.make_node("Reshape", ["z", "shape"], ["out"])]
    full = [slice(None)] * 4
    for a, s0, e0, st_ in zip(axes, starts, ends, steps):
        full[a % 3 + 1] = slice(s0, e0 if e0 >= -shape[a % 3] else None, st_)
    x = np.random.default_rng(seed).normal(0, 2, [5] + shape).astype(np.float32)
    y_shape = x[tuple(full)].shape
    model = nodes_model(nodes, [_i64("s", starts), _i64("e", ends), _i64("a", [a % 3 + 1 for a in axes]), _i64("t", steps),
                          _i64("shape", [0, -1])], [("x", ["N"] + shape)], ["out"])
    q, (real,) = _run(tmp_path, model, [x], bits)
    fmt = q.plan["input"]
    assert _out_fmt(q) == fmt                                        # pass-through: the input's format
    ref = fmt.quantize(x)[tuple(full)].transpose(0, 3, 1, 2).reshape(len(x), -1)
    assert real.shape == ref.shape and y_shape[1:] == x[tuple(full)].shape[1:]
    np.testing.assert_array_equal(output_integers(real, fmt.frac), ref)


@settings(max_examples=5, **SETTINGS)
@given(c=st.integers(2, 7), axis=st.sampled_from([1, 2, 3]), parts=st.integers(2, 3), bits=st.sampled_from([4, 8]),
       mode=st.sampled_from(["constant", "edge", "reflect"]), pads=st.lists(st.integers(0, 2), min_size=4, max_size=4),
       seed=st.integers(0, 99))
def test_split_and_pad(tmp_path, c, axis, parts, bits, mode, pads, seed):
    """Split (equal parts or explicit sizes) into several outputs, each padded (zero, edge or reflect)."""
    shape = [c, 5, 6]
    n = shape[axis - 1]
    parts = min(parts, n)
    sizes = [n // parts] * (parts - 1) + [n - n // parts * (parts - 1)]
    outs = [f"p{i}" for i in range(len(sizes))]
    nodes = [helper.make_node("Split", ["x", "sizes"], [f"s{i}" for i in range(len(sizes))], axis=axis)]
    widths = [0, 0, pads[0], pads[1], 0, 0, pads[2], pads[3]]
    for i in range(len(sizes)):
        nodes.append(helper.make_node("Pad", [f"s{i}", "pads"], [f"p{i}"], mode=mode))
    model = nodes_model(nodes, [_i64("sizes", sizes), _i64("pads", widths)], [("x", ["N"] + shape)], outs)
    x = np.random.default_rng(seed).normal(0, 1, [4] + shape).astype(np.float32)
    smallest = [min(sizes) if axis == 2 else 5, min(sizes) if axis == 3 else 6]
    assume(mode != "reflect" or (max(pads[0], pads[2]) < smallest[0] and max(pads[1], pads[3]) < smallest[1]))
    q, reals = _run(tmp_path, model, [x], bits)
    fmt = q.plan["input"]
    pieces = np.split(fmt.quantize(x), np.cumsum(sizes)[:-1], axis=axis)
    np_mode = {"constant": "constant", "edge": "edge", "reflect": "reflect"}[mode]
    for piece, real in zip(pieces, reals):
        ref = np.pad(piece, [(0, 0), (0, 0), (pads[0], pads[2]), (pads[1], pads[3])], mode=np_mode)
        np.testing.assert_array_equal(output_integers(real, fmt.frac), ref)


def _nearest_indices(n_in, n_out, scale, mode, nearest):
    """ONNX Resize (nearest) source index per output index, from the operator's definition, in float64."""
    x = np.arange(n_out, dtype=np.float64)
    if mode == "half_pixel":
        u = (x + 0.5) / scale - 0.5
    elif mode == "asymmetric":
        u = x / scale
    elif mode == "align_corners":
        u = x * (n_in - 1) / (n_out - 1) if n_out > 1 else np.zeros_like(x)
    elif mode == "pytorch_half_pixel":
        u = (x + 0.5) / scale - 0.5 if n_out > 1 else np.zeros_like(x)
    else:   # tf_half_pixel_for_nn
        u = (x + 0.5) / scale
    r = {"floor": np.floor(u), "ceil": np.ceil(u), "round_prefer_floor": np.ceil(u - 0.5),
         "round_prefer_ceil": np.floor(u + 0.5)}[nearest]
    return np.clip(r, 0, n_in - 1).astype(np.int64)


@settings(max_examples=6, **SETTINGS)
@given(h=st.integers(2, 5), w=st.integers(2, 5), sh=st.sampled_from([1, 2, 3]), sw=st.sampled_from([2, 4]),
       form=st.sampled_from(["scales", "sizes"]), bits=st.sampled_from([4, 8, 10]),
       mode=st.sampled_from(["asymmetric", "half_pixel", "align_corners", "pytorch_half_pixel", "tf_half_pixel_for_nn"]),
       nearest=st.sampled_from(["floor", "round_prefer_floor", "round_prefer_ceil", "ceil"]), seed=st.integers(0, 99))
def test_nearest_resize(tmp_path, h, w, sh, sw, form, bits, mode, nearest, seed):
    scales = np.array([1, 1, sh, sw], np.float32)
    inits = [numpy_helper.from_array(np.zeros(0, np.float32), "roi")]
    if form == "scales":
        inits.append(numpy_helper.from_array(scales, "scales"))
        ins = ["x", "roi", "scales"]
    else:
        inits = [_i64("sizes", [1, 3, h * sh, w * sw])]    # opset 13: every dim; the importer reads H, W
        ins = ["x", "", "", "sizes"]
    node = helper.make_node("Resize", ins, ["out"], mode="nearest", coordinate_transformation_mode=mode,
                            nearest_mode=nearest)
    model = nodes_model([node], inits, [("x", ["N", 3, h, w])], ["out"])
    if form == "sizes":   # shape inference needs the batch from the input: fix the output's dims
        model.graph.output[0].CopyFrom(helper.make_tensor_value_info("out", TensorProto.FLOAT, ["N", 3, h * sh, w * sw]))
    x = np.random.default_rng(seed).normal(0, 1, (3, 3, h, w)).astype(np.float32)
    q, (real,) = _run(tmp_path, model, [x], bits)
    fmt = q.plan["input"]
    iy = _nearest_indices(h, h * sh, sh, mode, nearest)
    ix = _nearest_indices(w, w * sw, sw, mode, nearest)
    ref = fmt.quantize(x)[:, :, iy][:, :, :, ix]
    np.testing.assert_array_equal(output_integers(real, fmt.frac), ref)


def _requantize(acc, acc_frac, fmt):
    s = acc_frac - fmt.frac
    shifted = rounding_right_shift(acc, s) if s > 0 else acc << -s
    return np.clip(shifted, fmt.qmin, fmt.qmax)


@settings(max_examples=6, **SETTINGS)
@given(op=st.sampled_from(["Max", "Min"]), bits=st.sampled_from([4, 8, 12]), sigma=st.sampled_from([0.1, 1.0, 8.0]),
       seed=st.integers(0, 99))
def test_max_min_of_two_inputs_in_different_formats(tmp_path, op, bits, sigma, seed):
    """Two model inputs (each its own format, calibrated on its own data) and two outputs (each dequantized with its
    own format): ``Max``/``Min`` aligns its operands to the finer scale, compares, then requantizes."""
    nodes = [helper.make_node(op, ["a", "b"], ["m"]), helper.make_node("Relu", ["b"], ["rb"]),
             helper.make_node("Transpose", ["rb"], ["out2"], perm=[0, 2, 3, 1])]
    model = nodes_model(nodes, [], [("a", ["N", 2, 3, 4]), ("b", ["N", 2, 3, 4])], ["m", "out2"])
    rng = np.random.default_rng(seed)
    a = rng.normal(0, sigma, (6, 2, 3, 4)).astype(np.float32)
    b = rng.normal(0, 1, (6, 2, 3, 4)).astype(np.float32)
    q, (m, out2) = _run(tmp_path, model, [a, b], bits)
    ka, kb = [l.output_key for l in q.graph.layers.values() if l.op == "input"]
    fa, fb, fo = q.plan[ka], q.plan[kb], _out_fmt(q, 0)
    assert len(q.graph.outputs) == 2 and (fa.frac != fb.frac or sigma == 1.0)
    F = max(fa.frac, fb.frac)
    qa, qb = fa.quantize(a) << (F - fa.frac), fb.quantize(b) << (F - fb.frac)
    ref = _requantize(np.maximum(qa, qb) if op == "Max" else np.minimum(qa, qb), F, fo)
    np.testing.assert_array_equal(output_integers(m, fo.frac), ref)
    np.testing.assert_array_equal(output_integers(out2, fb.frac), np.maximum(fb.quantize(b), 0).transpose(0, 2, 3, 1))


# ---- table functions --------------------------------------------------------------------------------------------

def _sigmoid(v):
    return 1 / (1 + np.exp(-v))


def _softplus(v):
    return np.log1p(np.exp(-np.abs(v))) + np.maximum(v, 0)


FUNCTIONS = {   # ONNX nodes of y = f(x) as exporters write them, the float64 reference, and a Lipschitz constant
    "sigmoid": (lambda: [helper.make_node("Sigmoid", ["x"], ["y"])], _sigmoid, 0.25),
    "silu": (lambda: [helper.make_node("Sigmoid", ["x"], ["s"]), helper.make_node("Mul", ["x", "s"], ["y"])],
             lambda v: v * _sigmoid(v), 1.1),
    "tanh": (lambda: [helper.make_node("Tanh", ["x"], ["y"])], np.tanh, 1.0),
    "mish": (lambda: [helper.make_node("Softplus", ["x"], ["sp"]), helper.make_node("Tanh", ["sp"], ["t"]),
                      helper.make_node("Mul", ["x", "t"], ["y"])], lambda v: v * np.tanh(_softplus(v)), 1.1),
    "gelu": (lambda: [helper.make_node("Div", ["x", "sqrt2"], ["d"]), helper.make_node("Erf", ["d"], ["e"]),
                      helper.make_node("Add", ["e", "one"], ["e1"]), helper.make_node("Mul", ["x", "e1"], ["xe"]),
                      helper.make_node("Mul", ["xe", "half"], ["y"])],
             lambda v: 0.5 * v * (1 + np.vectorize(math.erf)(v / float(np.float32(np.sqrt(2))))), 1.13),   # the model's constant
    "hardswish": (lambda: [helper.make_node("Add", ["x", "three"], ["a"]),         # PyTorch's export before opset 14
                           helper.make_node("Clip", ["a", "zero", "six"], ["c"]),
                           helper.make_node("Mul", ["x", "c"], ["m"]), helper.make_node("Div", ["m", "six"], ["y"])],
                  lambda v: v * np.clip(v + 3, 0, 6) / 6, 1.5),
}
SCALARS = [numpy_helper.from_array(np.float32(np.sqrt(2)), "sqrt2"), numpy_helper.from_array(np.float32(1), "one"),
           numpy_helper.from_array(np.float32(0.5), "half"), numpy_helper.from_array(np.float32(3), "three"),
           numpy_helper.from_array(np.float32(0), "zero"), numpy_helper.from_array(np.float32(6), "six")]


def _table_layer(tmp_path, fn):
    nodes = FUNCTIONS[fn][0]()
    used = {i for n in nodes for i in n.input}
    path = tmp_path / f"{fn}.onnx"
    onnx.save(nodes_model(nodes, [s for s in SCALARS if s.name in used], [("x", ["N", 1, 4, 4])], ["y"]), str(path))
    prepared, lg = tvm_fxp.load_model(path)
    tables = [l for l in lg.layers.values() if l.op == "table"]
    assert len(tables) == 1 and len(lg.layers) == 2, {l.name: l.op for l in lg.layers.values()}
    return prepared, lg, tables[0]


@pytest.mark.parametrize("fn", sorted(FUNCTIONS))
def test_table_exhaustive_within_stated_bound(tmp_path, fn):
    """Every stored integer of the input format: the table value against the float64 function.  Up to 12 input
    bits the table is exact (only the entry's own rounding, ``2**-(K+1)``); wider inputs index the top 12 bits
    and the stated bound (computed exhaustively when the table is built) is at most the Lipschitz bound
    ``L * (2**r - 1) / 2 * 2**-f + 2**-(K+1)``."""
    from tvm_fxp.passes.table import INDEX_BITS, build_table

    _, _, layer = _table_layer(tmp_path, fn)
    f_ref, lipschitz = FUNCTIONS[fn][1], FUNCTIONS[fn][2]
    for bits, frac, signed in [(4, 2, True), (6, 3, True), (8, 5, True), (8, 4, False), (10, 6, True), (12, 9, True),
                               (14, 10, True), (16, 12, True), (16, 11, False)]:
        fmt = FixedPointFormat(bits, frac, signed)
        t = build_table(layer.attrs["match"], fmt)
        q = np.arange(fmt.qmin, fmt.qmax + 1)
        got = np.ldexp(t.table[(q - fmt.qmin) >> t.shift].astype(np.float64), -t.frac)
        err = np.abs(got - f_ref(np.ldexp(q.astype(np.float64), -frac))).max()
        rounding = np.ldexp(0.5, -t.frac) * (1 + 1e-9)
        assert err <= t.bound * (1 + 1e-9) + 1e-15, (fmt, err, t.bound)
        if bits <= INDEX_BITS:
            assert t.shift == 0 and len(t.table) == 1 << bits and err <= rounding, (fmt, err)
        else:
            assert t.shift == bits - INDEX_BITS and len(t.table) == 1 << INDEX_BITS
            assert t.bound <= lipschitz * (2 ** t.shift - 1) / 2 * 2.0 ** -frac + rounding, (fmt, t.bound)
        assert np.abs(t.table).max() < 1 << 22


@settings(max_examples=4, **SETTINGS)
@given(fn=st.sampled_from(sorted(FUNCTIONS)), bits=st.sampled_from([4, 8, 12, 16]), sigma=st.sampled_from([0.5, 3.0]),
       seed=st.integers(0, 99))
def test_table_layer_end_to_end(tmp_path, fn, bits, sigma, seed):
    """The integer graph's output: the table entry of each input integer requantized to the output format,
    within half an output step (plus the table's bound) of the float64 function of the quantized input."""
    from tvm_fxp.passes.table import build_table

    prepared, lg, layer = _table_layer(tmp_path, fn)
    nodes = FUNCTIONS[fn][0]()
    used = {i for n in nodes for i in n.input}
    model = nodes_model(nodes, [s for s in SCALARS if s.name in used], [("x", ["N", 1, 4, 4])], ["y"])
    x = np.random.default_rng(seed).normal(0, sigma, (32, 1, 4, 4)).astype(np.float32)
    q, (real,) = _run(tmp_path, model, [x], bits)
    fin, fo = q.plan["input"], _out_fmt(q)
    t = build_table(layer.attrs["match"], fin)
    qx = fin.quantize(x)
    ref = _requantize(t.table[(qx - fin.qmin) >> t.shift], t.frac, fo)
    np.testing.assert_array_equal(output_integers(real, fo.frac), ref)
    y = FUNCTIONS[fn][1](np.ldexp(qx.astype(np.float64), -fin.frac))
    inside = (y >= fo.qmin * 2.0 ** -fo.frac) & (y <= fo.qmax * 2.0 ** -fo.frac)
    assert np.all(np.abs(real - y)[inside] <= 2.0 ** -(fo.frac + 1) + t.bound + 2.0 ** -(t.frac + 1) + 1e-12)


def test_table_ops_need_no_float_islands(tmp_path):
    """Sigmoid, SiLU, tanh, Mish and HardSwish are tables: no float island, no flag (opset 14's ``HardSwish``
    node as well); a HardSigmoid gate folds into its conv as a clip of the accumulator (no table); log/sqrt
    (not finite for every input) are still refused without ``--allow-float-islands``."""
    from tvm_fxp.passes import FxpGraphError, float_islands

    for fn in ("sigmoid", "silu", "tanh", "mish", "hardswish"):
        _, lg, layer = _table_layer(tmp_path, fn)
        assert float_islands(lg) == [] and layer.op == "table"
    w = numpy_helper.from_array(np.ones((1, 1, 1, 1), np.float32), "w")
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"]), helper.make_node("HardSwish", ["c"], ["h"]),
             helper.make_node("Conv", ["h", "w"], ["c2"]), helper.make_node("HardSigmoid", ["c2"], ["y"])]
    path = tmp_path / "hswish14.onnx"
    onnx.save(nodes_model(nodes, [w], [("x", ["N", 1, 4, 4])], ["y"], opset=14), str(path))
    _, lg = tvm_fxp.load_model(path)
    assert [l.op for l in lg.layers.values()] == ["input", "conv2d", "table", "conv2d"]
    assert [l.attrs["match"].describe for l in lg.layers.values() if l.op == "table"] == \
        ["multiply(x, divide(clip(add(x, 3), 0, 6), 6))"]
    path = tmp_path / "log.onnx"
    onnx.save(nodes_model([helper.make_node("Log", ["x"], ["y"])], [], [("x", ["N", 1, 4, 4])], ["y"]), str(path))
    with pytest.raises(FxpGraphError, match=r"relax.log has no integer realization"):
        tvm_fxp.load_model(path)


def test_plan_scorer_is_bit_exact_on_table_layers(tmp_path):
    """The search's compiled-once scorer looks up each table layer's table for the candidate's input format (fed at
    run time; SiLU, tanh, HardSwish, sigmoid): its outputs equal ``Simulate`` (hence the integer graph) bit for bit for plans of 6 (exact tables)
    and 14 bits (top-12-bit tables), with one compiled module; the float model (``layer_means(None)``) still
    evaluates the functions themselves."""
    from tvm_fxp.methods.uniform import Uniform, allocate
    from tvm_fxp.passes.plan_scorer import PlanScorer

    from onnx_graphs import Net, save

    g = Net([1, 2, 6, 6], seed=5)
    x = g.conv("input", 2, 4, stride=1)
    x = g.op("Mul", [x, g.op("Sigmoid", [x])])                                  # SiLU
    x = g.op("Tanh", [g.conv(x, 4, 4, stride=2)])
    x = g.hardswish(g.conv(x, 4, 4, k=1, pad=0))
    out = g.op("Sigmoid", [g.conv(x, 4, 3, k=1, pad=0)])
    path = save(g.model(out), tmp_path, "silu.onnx")
    xs = np.random.default_rng(0).normal(0, 1.5, (24, 2, 6, 6)).astype(np.float32)
    q = tvm_fxp.quantize(path, xs, Uniform(8), progress=False)
    assert sum(l.op == "table" for l in q.graph.layers.values()) == 4
    scorer = PlanScorer(q.prepared, q.plan, lambda m, t=None: tvm_fxp.build(m, FAST_TARGET))
    assert [k for _, k, _ in scorer.layout.tables] == [q.graph.layers[l.inputs[0]].output_key
                                                        for l in q.graph.layers.values() if l.op == "table"]
    for bits in (6, 14):
        plan = allocate(q.graph, q.stats, Uniform(bits))
        sim = tvm_fxp.Runner(tvm_fxp.build(q.with_plan(plan).simulated(), FAST_TARGET)).run(xs)
        np.testing.assert_array_equal(scorer.outputs(plan, xs), sim)
    floats, fine = scorer.layer_means(None, xs), scorer.layer_means(plan, xs)      # 14 bits: close to float
    assert set(floats) == set(fine) == {l.name for l in q.graph.layers.values() if l.op == "conv2d"}
    for name in floats:
        np.testing.assert_allclose(fine[name], floats[name], atol=2e-3)


def _conv_transpose_int(xq, w, s, pads, out_hw, groups):
    """int64 numpy ConvTranspose of stored integers: every input pixel scatters ``x * W`` (``W``: ``(I, O/g, k, k)``)."""
    n, cin, h, wd = xq.shape
    _, og, kh, kw = w.shape
    ig = cin // groups
    full = np.zeros((n, og * groups, (h - 1) * s + kh + s, (wd - 1) * s + kw + s), np.int64)
    for g in range(groups):
        for i in range(h):
            for j in range(wd):
                full[:, g * og:(g + 1) * og, i * s:i * s + kh, j * s:j * s + kw] += np.einsum(
                    "nc,cokl->nokl", xq[:, g * ig:(g + 1) * ig, i, j], w[g * ig:(g + 1) * ig])
    return full[:, :, pads[0]:pads[0] + out_hw[0], pads[1]:pads[1] + out_hw[1]]


@settings(max_examples=4, **SETTINGS)
@given(groups=st.sampled_from([1, 2]), cin=st.integers(1, 2), cout=st.integers(1, 2), k=st.sampled_from([2, 3, 4]),
       s=st.sampled_from([1, 2, 3]), p=st.sampled_from([0, 1]), op=st.sampled_from([0, 1]), relu=st.booleans(),
       bits=st.sampled_from([6, 8]), seed=st.integers(0, 99))
def test_conv_transpose_is_a_phase_decomposed_conv2d(tmp_path, groups, cin, cout, k, s, p, op, relu, bits, seed):
    """ConvTranspose (grouped or not, any padding and output padding) becomes one conv2d of its ``s**2`` phases on the
    input itself (kernels ``ceil(k/s)`` wide: the true MAC count when ``s`` divides ``k``), bias and ReLU before a
    depth-to-space: the float graph equals onnxruntime's, and the integer graph equals an int64 numpy transposed
    convolution of the stored integers."""
    import onnxruntime as ort

    if p >= k or op >= s:
        return
    cin, cout = cin * groups, cout * groups
    rng = np.random.default_rng(seed)
    W = rng.normal(0, 0.5, (cin, cout // groups, k, k)).astype(np.float32)
    bias = rng.normal(0, 0.1, cout).astype(np.float32)
    nodes = [helper.make_node("ConvTranspose", ["x", "W", "B"], ["t" if relu else "y"], strides=[s, s], pads=[p] * 4,
                              kernel_shape=[k, k], group=groups, output_padding=[op, op])]
    nodes += [helper.make_node("Relu", ["t"], ["y"])] if relu else []
    model = nodes_model(nodes, [numpy_helper.from_array(W, "W"), numpy_helper.from_array(bias, "B")],
                   [("x", ["N", cin, 4, 5])], ["y"])
    x = rng.normal(0, 1, (3, cin, 4, 5)).astype(np.float32)
    q, (real,) = _run(tmp_path, model, [x], bits)
    (layer,) = [l for l in q.graph.layers.values() if l.op == "conv2d"]
    m = -(-k // s)
    assert layer.weight.shape == (cout * s * s, cin // groups, m, m)            # s**2 phases, on the input itself
    float_out = tvm_fxp.Runner(tvm_fxp.build(q.prepared, FAST_TARGET)).run(x)
    np.testing.assert_allclose(float_out, ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})[0],
                               rtol=1e-4, atol=1e-5)
    fin, fw, fb, fo = (q.plan[k_] for k_ in ("input", f"{layer.name}.weight", f"{layer.name}.bias", f"{layer.name}.output"))
    # the quantized phase kernel, back to ConvTranspose's (cin, cout/g, k, k): where each original tap went
    from tvm_fxp.passes.selection import _phase_kernel

    where = _phase_kernel(np.arange(1, W.size + 1, dtype=np.float64).reshape(W.shape), groups, (s, s))
    wq = fw.quantize(layer.weight)
    w_int = np.zeros(W.size, np.int64)
    w_int[where[where > 0].astype(np.int64) - 1] = wq[where > 0]
    assert np.all(wq[where == 0] == 0)
    xq = fin.quantize(x)
    acc_frac = fin.frac + fw.frac
    acc = _conv_transpose_int(xq, w_int.reshape(W.shape), s, (p, p), real.shape[2:], groups)
    acc = acc + (fb.quantize(layer.bias)[::s * s] << (acc_frac - fb.frac)).reshape(1, -1, 1, 1)
    acc = np.maximum(acc, 0) if relu else acc
    np.testing.assert_array_equal(output_integers(real, fo.frac), _requantize(acc, acc_frac, fo))


def test_conv_transpose_refusals_name_the_node(tmp_path):
    """Dilated ConvTranspose has no realization: refused with the node named, not a traceback."""
    from tvm_fxp.passes import FxpGraphError

    w = numpy_helper.from_array(np.ones((1, 1, 2, 2), np.float32), "W")
    node = helper.make_node("ConvTranspose", ["x", "W"], ["y"], strides=[2, 2], dilations=[2, 2], kernel_shape=[2, 2])
    path = tmp_path / "ctd.onnx"
    onnx.save(nodes_model([node], [w], [("x", ["N", 1, 4, 4])], ["y"]), str(path))
    with pytest.raises(FxpGraphError, match=r"node .*ConvTranspose.*dilations \[2, 2\] \(1 only\)"):
        tvm_fxp.load_model(path)


@pytest.mark.parametrize("scale,mode", [(2, "half_pixel"), (2, "asymmetric"), (4, "pytorch_half_pixel")])
def test_bilinear_resize_with_integer_weights(tmp_path, scale, mode):
    """Linear Resize by an integer factor is a depthwise conv2d whose weights are multiples of ``1/(2s)``: the
    float graph equals onnxruntime's, the plan's 8-bit weights hold them exactly, and the integer graph is
    bit-exact with the simulation."""
    import onnxruntime as ort

    inits = [numpy_helper.from_array(np.zeros(0, np.float32), "roi"),
             numpy_helper.from_array(np.array([1, 1, scale, scale], np.float32), "scales")]
    node = helper.make_node("Resize", ["x", "roi", "scales"], ["y"], mode="linear", coordinate_transformation_mode=mode)
    model = nodes_model([node], inits, [("x", ["N", 2, 3, 4])], ["y"])
    x = np.random.default_rng(0).normal(0, 1, (4, 2, 3, 4)).astype(np.float32)
    q, (real,) = _run(tmp_path, model, [x], 8)
    (layer,) = [l for l in q.graph.layers.values() if l.op == "conv2d"]
    fw = q.plan[f"{layer.name}.weight"]
    np.testing.assert_array_equal(fw.fake_quantize(layer.weight), layer.weight)      # the weights are exact
    assert np.all(np.round(layer.weight * 4 * scale * scale) == layer.weight * 4 * scale * scale)
    float_out = tvm_fxp.Runner(tvm_fxp.build(q.prepared, FAST_TARGET)).run(x)
    ref = ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})[0]
    np.testing.assert_allclose(float_out, ref, rtol=1e-5, atol=1e-5)
    # the integer output is the exact bilinear interpolation of the stored input integers, rounded once
    fin, fo = q.plan["input"], _out_fmt(q)
    exact = ort.InferenceSession(model.SerializeToString()).run(None, {"x": fin.fake_quantize(x).astype(np.float32)})[0]
    assert np.abs(real - exact).max() <= 2.0 ** -(fo.frac + 1) + 1e-6


@st.composite
def linear_resizes(draw):
    h, w = draw(st.integers(1, 5)), draw(st.integers(2, 5))
    mode = draw(st.sampled_from(["align_corners", "half_pixel", "pytorch_half_pixel", "asymmetric"]))
    if draw(st.booleans()):                   # sizes: any output size, up or down
        return h, w, mode, None, (draw(st.integers(1, 8)), draw(st.integers(1, 8)))
    sh, sw = draw(st.sampled_from([0.5, 1.5, 2.0, 2.5, 3.0])), draw(st.sampled_from([1.5, 2.0, 0.5]))
    assume((h * sh).is_integer() and (w * sw).is_integer() and h * sh >= 1 and w * sw >= 1)
    return h, w, mode, (sh, sw), (int(h * sh), int(w * sw))


def _resize_layer_case(case):
    """Not the forms Prepare makes a depthwise conv2d (integer factors, half-pixel-like modes: tested above), nor
    align_corners to a single pixel (TVM's own float resize2d divides by zero there)."""
    h, w, mode, _, (oh, ow) = case
    conv = oh % h == 0 and ow % w == 0 and oh >= 2 and ow >= 2 and mode != "align_corners"
    return not conv and not (mode == "align_corners" and min(oh, ow) == 1)


@settings(max_examples=4, **SETTINGS)
@given(case=linear_resizes(), bits=st.sampled_from([6, 8, 12]), seed=st.integers(0, 99))
def test_linear_resize_any_scale_and_mode(tmp_path, case, bits, seed):
    """Linear Resize with align_corners or a non-integer scale (``scales`` or ``sizes``) is a ``resize`` layer: the
    integer graph equals an int64 numpy interpolation of the stored integers with the layer's weights (``2**-11``,
    each pair summing to 1), bit-exact with the simulation; against onnxruntime on the quantized input it is
    within half an output step plus the weights' stated error."""
    import onnxruntime as ort

    from tvm_fxp.passes.resize import WEIGHT_BITS

    assume(_resize_layer_case(case))
    h, w, mode, scales, (oh, ow) = case
    roi = numpy_helper.from_array(np.zeros(0, np.float32), "roi")
    if scales is None:
        inits, ins = [roi, _i64("sizes", [4, 2, oh, ow])], ["x", "roi", "", "sizes"]
    else:
        inits, ins = [roi, numpy_helper.from_array(np.array([1, 1, *scales], np.float32), "scales")], ["x", "roi", "scales"]
    node = helper.make_node("Resize", ins, ["y"], mode="linear", coordinate_transformation_mode=mode)
    model = nodes_model([node], inits, [("x", [4, 2, h, w])], ["y"])
    x = np.random.default_rng(seed).normal(0, 1, (4, 2, h, w)).astype(np.float32)
    q, (real,) = _run(tmp_path, model, [x], bits)
    (layer,) = [l for l in q.graph.layers.values() if l.op == "resize"]
    float_out = tvm_fxp.Runner(tvm_fxp.build(q.prepared, FAST_TARGET)).run(x)
    ref = ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})[0]
    np.testing.assert_allclose(float_out, ref, rtol=1e-5, atol=1e-5)
    fin, fo = q.plan["input"], _out_fmt(q)
    rw = layer.attrs["weights"]

    def matrix(a, n_in):                      # (n_out, n_in) integer interpolation matrix
        m = np.zeros((len(a.i0), n_in), np.int64)
        np.add.at(m, (np.arange(len(a.i0)), a.i0), a.w0)
        np.add.at(m, (np.arange(len(a.i1)), a.i1), a.w1)
        return m

    mh, mw = matrix(rw.h, h), matrix(rw.w, w)
    assert np.all(mh.sum(1) == 1 << WEIGHT_BITS) and np.all(mw.sum(1) == 1 << WEIGHT_BITS)
    qx = fin.quantize(x)
    acc = np.einsum("ah,nchw,bw->ncab", mh, qx, mw)
    np.testing.assert_array_equal(output_integers(real, fo.frac), _requantize(acc, fin.frac + 2 * WEIGHT_BITS, fo))
    exact = ort.InferenceSession(model.SerializeToString()).run(None, {"x": fin.fake_quantize(x).astype(np.float32)})[0]
    inside = (exact >= fo.qmin * 2.0 ** -fo.frac) & (exact <= fo.qmax * 2.0 ** -fo.frac)
    assert rw.bound < 2.0 ** -WEIGHT_BITS * 2
    tol = 2.0 ** -(fo.frac + 1) + rw.bound * np.abs(qx).max() * 2.0 ** -fin.frac + 1e-5
    assert np.abs(real - exact)[inside].max(initial=0) <= tol


def test_linear_resize_refusals_name_the_node(tmp_path):
    """A cubic resize has no realization, and TVM cannot build an align_corners resize to one pixel on an axis:
    both refused naming the node."""
    from tvm_fxp.passes import FxpGraphError

    node = helper.make_node("Resize", ["x", "", "", "sizes"], ["y"], mode="cubic")
    path = tmp_path / "cubic.onnx"
    onnx.save(nodes_model([node], [_i64("sizes", [1, 1, 6, 6])], [("x", [1, 1, 4, 4])], ["y"]), str(path))
    with pytest.raises(FxpGraphError, match=r"node \w+ \(relax.image.resize2d\): resize cubic .* not supported"):
        tvm_fxp.load_model(path)
    node = helper.make_node("Resize", ["x", "", "", "sizes"], ["y"], mode="linear",
                            coordinate_transformation_mode="align_corners")
    onnx.save(nodes_model([node], [_i64("sizes", [1, 1, 1, 6])], [("x", [1, 1, 4, 4])], ["y"]), str(path))
    with pytest.raises(FxpGraphError, match=r"node \w+ \(relax.image.resize2d\): align_corners linear resize to an "
                                            r"output of one pixel"):
        tvm_fxp.load_model(path)


def test_readme_op_table_is_generated_from_the_rule_registry():
    """The README's supported-op table is exactly what ``passes/op_table.py`` generates from ``realize.RULES``,
    and every registered rule has a row."""
    from pathlib import Path

    from tvm_fxp.passes.op_table import END, START, markdown
    from tvm_fxp.passes.realize import COMPOSITE_RULES, RULES

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    block = readme.split(START)[1].split(END)[0].strip()
    assert block == markdown(), "run: python -m tvm_fxp.passes.op_table README.md"
    for op in set(RULES) - {"relax.sigmoid", "relax.tanh", "relax.exp"}:
        assert f"`{op}`" in block or op in ("relax.log", "relax.sqrt") or op.startswith("relax.") and \
            RULES[op].__name__ == "_float_island", op
    assert all(f"| {name} (several ops) |" in block for name in COMPOSITE_RULES)


def test_cli_quantizes_a_multi_output_detector(tmp_path, capsys):
    """``tvm-fxp quantize`` on a small detector with two heads at two scales (strided-slice stem, SiLU, nearest
    upsampling, sigmoid decode): exit 0, integer-only, and summary.json / report.md list every output with its own
    format, its bit-exactness and its relative L2 error against float."""
    import json

    from onnx_graphs import Net, detection_model, save
    from tvm_fxp.cli import main

    g = Net([1, 3, 16, 16], seed=3)
    stem = g.op("Concat", [g.op("Slice", [g.op("Relu", ["input"]), g.tensor(np.array([i], np.int64), "s", np.int64),
                                          g.tensor(np.array([16], np.int64), "e", np.int64),
                                          g.tensor(np.array([2], np.int64), "a", np.int64),
                                          g.tensor(np.array([2], np.int64), "t", np.int64)]) for i in (0, 1)], axis=1)
    x = g.conv(stem, 6, 8, stride=1)
    x = g.op("Mul", [x, g.op("Sigmoid", [x])])
    small = g.conv(x, 8, 8, stride=2)
    up = g.op("Resize", [small, "", g.tensor(np.array([1, 1, 2, 2], np.float32), "sc")], mode="nearest")
    heads = [g.op("Sigmoid", [g.conv(small, 8, 6, k=1, pad=0)]),
             g.op("Sigmoid", [g.conv(g.op("Concat", [up, x], axis=1), 16, 6, k=1, pad=0)])]
    path = save(detection_model(g, heads, 16), tmp_path, "det.onnx")
    code = main(["quantize", str(path), "--calib", "synthetic", "--calib-size", "16", "--eval-size", "8",
                 "--out", str(tmp_path / "out"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 0, err
    s = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert s["bit_exact"] is True and s["float_ops_in_integer_graph"] == 0 and s["float_islands"] == []
    assert len(s["outputs"]) == 2 and all(o["bit_exact"] for o in s["outputs"])
    assert all(o["relative_l2_vs_float"] < 0.03 for o in s["outputs"]), s["outputs"]
    report = (tmp_path / "out" / "report.md").read_text()
    assert "## Outputs" in report and all(f"| {o['layer']} | {o['format']} |" in report for o in s["outputs"])
    plan = json.loads((tmp_path / "out" / "plan.json").read_text())
    tables = {n: i["table"] for n, i in plan["layers"].items() if "table" in i}
    assert sorted(t["function"] for t in tables.values()) == ["multiply(x, sigmoid(x))", "sigmoid(x)", "sigmoid(x)"]
    assert all(t["exact"] and t["entries"] == 256 and t["max_error"] <= 2.0 ** -(t["frac"] + 1) for t in tables.values())
    assert "## Lookup tables" in report and "| `multiply(x, sigmoid(x))` | 256 | 0 |" in report


@pytest.mark.parametrize("opset", [7, 9])
def test_upsample_of_old_opsets(tmp_path, opset):
    """``Upsample`` (opset 7: scales attribute; 9: scales input), as old YOLO exports write it: the integer graph
    equals onnxruntime's Upsample of the quantized input exactly."""
    import onnxruntime as ort

    x_info = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2, 3, 4])
    if opset == 7:
        node, inits = helper.make_node("Upsample", ["x"], ["y"], mode="nearest", scales=[1.0, 1.0, 2.0, 3.0]), []
    else:
        node = helper.make_node("Upsample", ["x", "s"], ["y"], mode="nearest")
        inits = [numpy_helper.from_array(np.array([1, 1, 2, 3], np.float32), "s")]
    g = helper.make_graph([node], "g", [x_info], [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2, 6, 12])],
                          inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 3 if opset == 7 else 4
    path = tmp_path / "up.onnx"
    onnx.save(m, str(path))
    x = np.random.default_rng(opset).normal(0, 1, (4, 2, 3, 4)).astype(np.float32)
    q = tvm_fxp.quantize(path, x, tvm_fxp.Uniform(8), progress=False)
    real = tvm_fxp.Runner(tvm_fxp.build(q.realized(), FAST_TARGET)).run(x)
    ref = ort.InferenceSession(str(path)).run(None, {"x": q.plan["input"].fake_quantize(x).astype(np.float32)})[0]
    np.testing.assert_array_equal(real, ref)


def test_multi_input_data_specs(tmp_path):
    """The CLI's data specs for a model with two inputs: ``synthetic`` gives one array per input in the model's
    order, an .npz one per input name (labels optional); fashion-mnist/images and an .npz lacking an input or with
    a wrong shape are refused naming what to give."""
    from types import SimpleNamespace

    from tvm_fxp.data import DataError, count, load_data

    layers = {"input_img": SimpleNamespace(op="input", name="input_img", out_shape=(2, 6, 6)),
              "input_aux": SimpleNamespace(op="input", name="input_aux", out_shape=(3, 6, 6)),
              "conv2d_0": SimpleNamespace(op="conv2d", name="conv2d_0", out_shape=(4, 6, 6))}
    lg = SimpleNamespace(layers=layers)
    ds = load_data("synthetic", lg, "calib", 5)
    assert [a.shape for a in ds.inputs] == [(5, 2, 6, 6), (5, 3, 6, 6)] and count(ds.inputs) == 5 == len(ds)
    rng = np.random.default_rng(0)
    npz = tmp_path / "d.npz"
    np.savez(npz, aux=rng.random((7, 3, 6, 6)), img=rng.random((7, 2, 6, 6)), labels=np.arange(7))
    ds = load_data(str(npz), lg, "calib", 4)
    assert [a.shape for a in ds.inputs] == [(4, 2, 6, 6), (4, 3, 6, 6)] and ds.inputs[0].dtype == np.float32
    assert list(ds.labels) == [0, 1, 2, 3] and count(load_data(str(npz), lg, "eval", 4).inputs) == 7
    with pytest.raises(DataError, match=r"2 inputs \(img, aux\); give 'synthetic' or an .npz"):
        load_data("fashion-mnist", lg, "calib", 4)
    np.savez(npz, img=rng.random((7, 2, 6, 6)), aux=rng.random((7, 3, 5, 6)))
    with pytest.raises(DataError, match=r"'aux' must be a finite numeric array of shape \[N, 3, 6, 6\]"):
        load_data(str(npz), lg, "calib", 4)


@pytest.mark.slow   # 11 s: the data specs are checked above, multi-input graphs in tests/test_robustness.py
def test_cli_quantizes_a_two_input_model(tmp_path, capsys):
    """``tvm-fxp quantize`` of a model with two inputs: ``--calib`` an .npz with one array per input name (a search
    method: its plan scorer runs both inputs), ``--data synthetic`` (random arrays of each input's shape); every
    output bit-exact, the prepared graph checked against onnxruntime with both inputs; an .npz lacking an input
    is refused naming it."""
    import json

    from onnx_graphs import Net, multi_io_model, save
    from tvm_fxp.cli import main

    g = Net([1, 2, 6, 6], seed=4)
    a = g.conv("img", 2, 4)
    b = g.conv("aux", 3, 4, k=1, pad=0)
    s = g.op("Add", [a, b])
    outs = [g.op("Sigmoid", [g.conv(s, 4, 3, k=1, pad=0)]), g.op("Relu", [s])]
    path = save(multi_io_model(g, [("img", ["N", 2, 6, 6]), ("aux", ["N", 3, 6, 6])], outs), tmp_path, "two.onnx")
    rng = np.random.default_rng(0)
    npz = tmp_path / "calib.npz"
    np.savez(npz, img=rng.normal(0, 1, (24, 2, 6, 6)).astype(np.float32),
             aux=rng.normal(0, 1, (24, 3, 6, 6)).astype(np.float32))
    code = main(["quantize", str(path), "--calib", str(npz), "--data", "synthetic", "--method", "goyal2021",
                 "--time-limit", "20", "--search-size", "16", "--eval-size", "8", "--out", str(tmp_path / "out"),
                 "--quiet"])
    err = capsys.readouterr().err
    assert code == 0, err
    s = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert s["bit_exact"] and len(s["outputs"]) == 2 and s["float_ops_in_integer_graph"] == 0
    assert s["calibration"]["inputs"] == 24 and s["evaluated_inputs"] == 8 and s["onnxruntime_check"]["inputs"] == 8
    np.savez(npz, img=np.zeros((4, 2, 6, 6), np.float32))
    code = main(["quantize", str(path), "--calib", str(npz), "--out", str(tmp_path / "out2"), "--quiet"])
    err = capsys.readouterr().err
    assert code != 0 and "no array for the model input(s) ['aux']" in err and "Traceback" not in err
