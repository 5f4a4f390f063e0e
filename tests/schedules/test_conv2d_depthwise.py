"""Depthwise conv2d kernels for x86 (schedules/conv2d_depthwise.py) bit-exact against the int64 numpy desc:
layout "depthwise" (widening multiply-adds along the output row) and "depthwise_vnni" (vpermb + vpdpbusd),
strides 1 and 2, padding, dilation, 3x3 and 5x5, with and without the fused requantize epilogue."""

import numpy as np
import pytest
import tvm
from tvm import relax

import tvm_fxp
from tvm_fxp.schedules import conv2d_primfuncs, host, kernel_config, plan_conv2d, preset
from tvm_fxp.schedules.fuse import FuseEpilogue
from tvm_fxp.schedules.legalize import dispatched_kernels

from . import reference as ref

HOST = host()
VBMI = kernel_config(HOST, "int32").vbmi
X86 = kernel_config(HOST, "int32").arch.startswith("x86")
LAYOUTS = ["depthwise", pytest.param("depthwise_vnni", marks=pytest.mark.skipif(
    not VBMI, reason="host has no AVX-512 VNNI + VBMI"))]

# (data shape, kernel, strides, padding (t, l, b, r), dilation, data dtype, accumulator)
CASES = [
    ((2, 5, 9, 11), 3, (1, 1), (1, 1, 1, 1), (1, 1), "uint8", "int32"),
    ((1, 3, 20, 37), 3, (2, 2), (1, 1, 1, 1), (1, 1), "int8", "int32"),      # chunks, overlapping last chunk
    ((1, 4, 14, 35), 3, (1, 1), (1, 1, 1, 1), (1, 1), "uint8", "int16"),
    ((1, 4, 14, 14), 3, (2, 2), (0, 0, 1, 1), (1, 1), "int8", "int16"),      # "SAME" padding at stride 2
    ((1, 2, 8, 7), 5, (1, 1), (2, 2, 2, 2), (1, 1), "int8", "int32"),        # 5 taps a row: two tap groups
    ((1, 3, 11, 40), 3, (1, 2), (0, 1, 2, 0), (2, 1), "uint8", "int32"),     # row dilation, mixed strides
    ((1, 3, 13, 5), 3, (1, 1), (1, 1, 1, 1), (1, 1), "uint8", "int16"),      # vnni: 3 rows of 5 in a vector
]


@pytest.mark.skipif(not X86, reason="x86 kernels")
@pytest.mark.parametrize("layout", LAYOUTS)
def test_depthwise_kernel_matches_reference(layout):
    rng = np.random.default_rng(4)
    for shape, k, strides, padding, dilation, dtype, acc in CASES:
        c = shape[1]
        x, w = ref.random_operands(rng, shape, (c, 1, k, k), dtype, acc, k * k)
        plan = plan_conv2d(x.shape, w.shape, dtype, acc, strides, padding, dilation, c, target=HOST, layout=layout)
        assert plan.layout == layout and not plan.offset_data
        expected = ref.conv2d_ref(x, w, strides, padding, dilation, c)
        got = ref.run_kernel(conv2d_primfuncs(plan), plan, x, w, expected.shape, HOST, c)
        assert got.dtype == np.dtype(acc)
        np.testing.assert_array_equal(got.astype(np.int64), expected, err_msg=str(plan))


@pytest.mark.skipif(not X86, reason="x86 kernels")
def test_layout_choice():
    depthwise = ((1, 32, 28, 28), (32, 1, 3, 3), "uint8", "int32", (2, 2), (1, 1, 1, 1), (1, 1), 32)
    assert plan_conv2d(*depthwise, target=HOST).layout == ("depthwise_vnni" if VBMI else "depthwise")
    assert plan_conv2d(*depthwise, config=kernel_config(preset("rpi4"), "int32")).layout == "groups"
    multiplier2 = ((1, 32, 28, 28), (64, 1, 3, 3), "uint8", "int32", (1, 1), (1, 1, 1, 1), (1, 1), 32)
    assert plan_conv2d(*multiplier2, target=HOST).layout == "groups"
    wide = ((1, 8, 28, 28), (8, 1, 3, 3), "uint8", "int32", (5, 5), (1, 1, 1, 1), (1, 1), 8)
    assert plan_conv2d(*wide, target=HOST).layout == "depthwise"      # 16 columns at stride 5 > one 64-byte load
    with pytest.raises(ValueError, match="depthwise"):
        plan_conv2d(*multiplier2, target=HOST, layout="depthwise")


def _c(v, dtype):
    return relax.const(np.asarray(v, dtype), dtype)


@pytest.mark.skipif(not X86, reason="x86 kernels")
@pytest.mark.parametrize("strides, relu", [((1, 1), True), ((2, 2), False)])
def test_fused_depthwise_layer_is_exact(strides, relu):
    """conv2d (groups = channels) + bias at accumulator scale + relu/clip + rounding shift + saturate, as
    Realize emits it, becomes one depthwise kernel with the epilogue fused, and gives the numpy integers."""
    rng = np.random.default_rng(6 + strides[0])
    c = 20
    x, w = ref.random_operands(rng, (2, c, 13, 19), (c, 1, 3, 3), "int8", "int32", 9)
    bias = rng.integers(-2000, 2000, (1, c, 1, 1)).astype("int32")
    shift = rng.integers(1, 6, (1, c, 1, 1)).astype("int32")
    lo = 0 if relu else -128

    def body(bb, xv):
        acc = bb.emit(relax.op.nn.conv2d(xv, relax.const(w), strides, [1, 1, 1, 1], groups=c, out_dtype="int32"))
        t = bb.emit(relax.op.add(acc, relax.const(bias)))
        if relu:
            t = bb.emit(relax.op.nn.relu(t))
        neg = bb.emit(relax.op.astype(relax.op.less(t, _c(0, "int32")), "int32"))
        s = bb.emit(relax.op.right_shift(relax.op.subtract(relax.op.add(t, relax.const(
            (1 << (shift - 1)).astype("int32"))), neg), relax.const(shift)))
        return relax.op.astype(relax.op.minimum(relax.op.maximum(s, _c(lo, "int32")), _c(127, "int32")), "int8")

    mod = ref.relax_main((tvm.tirx.Var("n", "int64"), c, 13, 19), "int8", body)
    layout = plan_conv2d(x.shape, w.shape, "int8", "int32", strides, (1, 1, 1, 1), (1, 1), c, target=HOST).layout
    assert dispatched_kernels(mod, HOST) == {f"conv2d_int8_int32_{layout}": 1}
    fuse = FuseEpilogue()
    with HOST:
        fuse(mod)
    assert fuse.fused == 1
    got = relax.VirtualMachine(tvm_fxp.build(mod), tvm.cpu())["main"](tvm.runtime.tensor(x)).numpy()
    t = ref.conv2d_ref(x, w, strides, (1, 1, 1, 1), (1, 1), c) + bias
    if relu:
        t = np.maximum(t, 0)
    expected = np.clip((t + (1 << (shift - 1)) - (t < 0)) >> shift, lo, 127)
    np.testing.assert_array_equal(got, expected)


@pytest.mark.slow
@pytest.mark.skipif(not X86, reason="x86 kernels")
@pytest.mark.parametrize("bits", [8, 4])
def test_mobilenet_v2_realized_equals_simulation(tmp_path, bits):
    """A MobileNetV2 (the architecture generator's, 64x64, width 1/2, random weights) realized with proven
    accumulators -- int16 depthwise layers where the plan proves them (4 bits), int32 elsewhere -- runs its
    depthwise layers on the x86 depthwise kernels and gives the simulation's integers bit for bit."""
    import onnx
    from onnx_graphs import Net, mobilenet_v2

    from tvm_fxp.calibrate import calibrate
    from tvm_fxp.methods import uniform

    g = Net([1, 3, 64, 64], seed=0, opset=13)
    path = tmp_path / "mobilenet_v2.onnx"
    onnx.save(g.model(mobilenet_v2(g, 64, width=0.5, classes=10)), str(path))
    prepared, lg = tvm_fxp.load_model(path)
    x = np.random.default_rng(0).normal(0, 1, (4, 3, 64, 64)).astype(np.float32)
    stats = calibrate(prepared, lg, x, batch_size=4, progress=False)
    q = tvm_fxp.bind_plan(prepared, lg, uniform.allocate(lg, stats, tvm_fxp.Uniform(bits)))
    realized = q.realized()
    kernels = dispatched_kernels(realized, HOST)
    depthwise = sum(n for tag, n in kernels.items() if "_depthwise" in tag)
    assert depthwise == sum(1 for layer in lg.layers.values() if layer.op == "conv2d" and layer.weight.shape[1] == 1
                            and layer.weight.shape[0] > 1) == 17, kernels
    if bits == 4:
        assert any(tag.startswith(("conv2d_uint8_int16_depthwise", "conv2d_int8_int16_depthwise")) for tag in kernels)
    got = tvm_fxp.Runner(tvm_fxp.build(realized)).run(x)
    np.testing.assert_array_equal(got, tvm_fxp.Runner(tvm_fxp.build(q.simulated())).run(x))
    assert np.unique(got).size > 4


@pytest.mark.skipif(not X86, reason="x86 kernels")
def test_avx2_target_takes_the_plain_kernel():
    """On an AVX2 target without AVX-512 (haswell code, run here) a depthwise conv takes layout "depthwise"
    with 8 int32 / 16 int16 lanes a vector, exactly."""
    haswell = tvm.target.Target({"kind": "llvm", "mcpu": "haswell"})
    rng = np.random.default_rng(8)
    x, w = ref.random_operands(rng, (1, 3, 9, 30), (3, 1, 3, 3), "uint8", "int32", 9)
    plan = plan_conv2d(x.shape, w.shape, "uint8", "int32", (2, 2), (1, 1, 1, 1), (1, 1), 3,
                       config=kernel_config(haswell, "int32"))
    assert (plan.layout, plan.lanes) == ("depthwise", 8)
    expected = ref.conv2d_ref(x, w, (2, 2), (1, 1, 1, 1), (1, 1), 3)
    np.testing.assert_array_equal(ref.run_kernel(conv2d_primfuncs(plan), plan, x, w, expected.shape, haswell, 3),
                                  expected)
