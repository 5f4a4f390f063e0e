"""The paired-int32 baseline (schedules/paired_int32.py + intrin_arm.py) against the int64 numpy desc.

On x86 the schedule runs with the desc's plain loops (``neon=False``: the NEON impl cannot compile for x86);
the tensorized NEON code is checked structurally here and bit for bit under qemu in test_arm_emulated.py.
Weights avoid -128 (``kernel_operands_ok``: ruy's AccumTwoWithin16Bits condition); data take the full range.
"""

import re

import numpy as np
import pytest
import tvm
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tvm_fxp.schedules import paired_int32 as paired
from tvm_fxp.schedules import preset
from tools.asm import hot_loop

from .reference import conv2d_ref, dense_ref, relax_main

SETTINGS = settings(max_examples=3, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def run_paired(plan, x, w, neon=False, target="llvm"):
    pack_func, offset_func, kernel_func = paired.paired_primfuncs(plan, batch=x.shape[0], neon=neon)
    packed = tvm.runtime.empty(plan.packed_weight_shape, "int8")
    tvm.tirx.build(pack_func, target="llvm")(tvm.runtime.tensor(w), packed)
    args = [tvm.runtime.tensor(x), packed]
    if offset_func is not None:
        off = tvm.runtime.empty((plan.out_channels,), "int32")
        tvm.tirx.build(offset_func, target="llvm")(tvm.runtime.tensor(w), off)
        args.append(off)
    shape = (x.shape[0], plan.out_channels, *plan.out_hw) if plan.kind == "conv2d" else (plan.rows, plan.out_channels)
    out = tvm.runtime.empty(shape, "int32")
    tvm.tirx.build(kernel_func, target=target)(*args, out)
    return out.numpy()


def operands(rng, x_shape, w_shape, dtype):
    lo, hi = (-128, 127) if dtype == "int8" else (0, 255)
    x = rng.integers(lo, hi + 1, x_shape)
    x.flat[rng.integers(0, x.size, max(1, x.size // 4))] = lo      # extremes: -128 * -127 pairs
    w = rng.integers(-127, 128, w_shape)
    w.flat[rng.integers(0, w.size, max(1, w.size // 4))] = -127
    return x.astype(dtype), w.astype("int8")


@given(c=st.integers(1, 40), oc=st.integers(1, 23), k=st.sampled_from([1, 3, 5]), s=st.integers(1, 2),
       pad=st.integers(0, 2), hw=st.integers(3, 10), dtype=st.sampled_from(["int8", "uint8"]),
       seed=st.integers(0, 2**31))
@SETTINGS
def test_paired_conv2d_bit_exact(c, oc, k, s, pad, hw, dtype, seed):
    hw = max(hw, k - 2 * pad)
    x, w = operands(np.random.default_rng(seed), (1, c, hw, hw), (oc, c, k, k), dtype)
    plan = paired.plan_paired_conv2d(x.shape, w.shape, dtype, strides=(s, s), padding=(pad,) * 4)
    np.testing.assert_array_equal(run_paired(plan, x, w), conv2d_ref(x, w, (s, s), (pad,) * 4))


@given(k=st.integers(1, 300), n=st.integers(1, 40), dtype=st.sampled_from(["int8", "uint8"]),
       seed=st.integers(0, 2**31))
@SETTINGS
def test_paired_dense_bit_exact(k, n, dtype, seed):
    a, b = operands(np.random.default_rng(seed), (1, k), (k, n), dtype)
    plan = paired.plan_paired_dense(a.shape, b.shape, dtype)
    np.testing.assert_array_equal(run_paired(plan, a, b), dense_ref(a, b))


def test_pairing_limit_is_named():
    """Two products of -128 * -128 wrap int16: the kernel states the condition ruy states."""
    assert paired.kernel_operands_ok(np.array([-127, 0, 127], np.int8))
    assert not paired.kernel_operands_ok(np.array([-128, 5], np.int8))


@pytest.mark.parametrize("case", ["conv3x3_c16", "conv3x3_c24_im2col", "dense"])
def test_neon_inner_loop_is_the_gemmlowp_ruy_form(case):
    """Cross-compiled for the Pi: the hot loop is smull .8h + smlal2 .8h + sadalp .4s, one of each per output
    and 16-depth step, no other multiply; the write-back reduces with addp."""
    if case == "dense":
        plan = paired.plan_paired_dense((1, 256), (256, 32), "uint8")
    else:
        c = 16 if case == "conv3x3_c16" else 24
        plan = paired.plan_paired_conv2d((1, c, 14, 14), (32, c, 3, 3), "uint8", padding=(1, 1, 1, 1))
    asm = tvm.tirx.build(paired.paired_primfuncs(plan)[2], target=preset("rpi4")).inspect_source("asm")
    loop = hot_loop(asm)
    m = loop.mnemonics
    assert m.get("smull", 0) == m.get("smlal2", 0) == m.get("sadalp", 0) > 0, m
    assert loop.mul_lanes == 16 * m["smull"]            # 8 + 8 lanes: 16 MACs per smull/smlal2 pair
    assert all(re.match(r"smull\s+v\d+\.8h|smlal2\s+v\d+\.8h|sadalp\s+v\d+\.4s", i) for i in loop.lines
               if i.split()[0] in ("smull", "smlal2", "sadalp"))
    if plan.kind == "conv2d":
        assert "addp" in asm


def test_depth_order_of_the_proof_is_the_packed_weight():
    """``depth_weights`` (numpy, what the pair proof reads) equals the TIR ``pack_weight`` rows, zero padding
    included, for both conv2d depth orders and dense."""
    rng = np.random.default_rng(3)
    for plan, w in [(paired.plan_paired_conv2d((1, 16, 6, 6), (5, 16, 3, 3), "uint8"), (5, 16, 3, 3)),
                    (paired.plan_paired_conv2d((1, 3, 6, 6), (5, 3, 3, 3), "int8"), (5, 3, 3, 3)),
                    (paired.plan_paired_dense((1, 37), (37, 6), "uint8"), (37, 6))]:
        weight = rng.integers(-128, 128, w).astype("int8")
        packed = tvm.runtime.empty(plan.packed_weight_shape, "int8")
        tvm.tirx.build(paired.paired_primfuncs(plan, neon=False)[0], target="llvm")(tvm.runtime.tensor(weight),
                                                                                    packed)
        np.testing.assert_array_equal(packed.numpy()[:plan.out_channels], paired.depth_weights(weight, plan))


def test_pair_proof_fails_exactly_on_two_minus_128_weights_in_a_lane():
    """Data in [-128, 127]: an int16 lane sums depth k and k+8 of a 16-step; it can wrap only when both of its
    weights are -128 (2 * 128 * 128 = 32768); one -128 anywhere, or two in different lanes, is proven safe."""
    plan = paired.plan_paired_dense((1, 64), (64, 4), "uint8")
    w = np.full((64, 4), 127, np.int8)
    assert paired.pair_sums_fit_int16(w, plan)
    w[3, 1] = w[20, 2] = w[27, 2] = -128          # depth 20 and 27: lanes 4 and 11 of the second step
    assert paired.pair_sums_fit_int16(w, plan)
    w[11, 1] = -128                               # depth 3 and 11, output 1: one lane, both -128
    assert not paired.pair_sums_fit_int16(w, plan)
    assert paired.pair_sums_fit_int16(w, plan, data_range=(-127, 127))    # a narrower data range proves it


def _int32_layer(w, dense=False):
    from tvm import relax

    def body(bb, x):
        y = relax.op.matmul(x, relax.const(w), out_dtype="int32") if dense else \
            relax.op.nn.conv2d(x, relax.const(w), padding=[1, 1], out_dtype="int32")
        return bb.emit(y)

    n = tvm.tirx.Var("n", "int64")
    return relax_main((n, w.shape[0]) if dense else (n, w.shape[1], 10, 10), "uint8", body)


def test_aarch64_build_of_a_proven_int32_layer_is_paired():
    """The Pi build of an int32-accumulating int8 conv2d/dense whose constant weights prove the int16 pair sums
    runs the gemmlowp/ruy kernel (hot loop smull .8h + smlal2 .8h + sadalp .4s); a lane with two -128 weights,
    or a host target, keeps the widening kernel."""
    from tvm_fxp.schedules import legalize as L

    rpi4 = preset("rpi4")
    w = np.random.default_rng(0).integers(-127, 128, (24, 16, 3, 3)).astype("int8")
    w[0, 0, 0, 0] = -128
    assert L.dispatched_kernels(_int32_layer(w), rpi4) == {"conv2d_uint8_int32_paired": 1}
    assert L.dispatched_kernels(_int32_layer(w[:, :, 0, 0].T.copy(), dense=True), rpi4) == {
        "dense_uint8_int32_paired": 1}
    assert "paired" not in str(L.dispatched_kernels(_int32_layer(w), "llvm"))
    unsafe = w.copy()
    unsafe[0, 8, 0, 0] = -128        # channels 0 and 8 of one tap: one int16 lane of the nhwc depth order
    assert L.dispatched_kernels(_int32_layer(unsafe), rpi4) == {"conv2d_uint8_int32_channels": 1}
    with tvm.target.Target(rpi4):
        legal = tvm.relax.transform.LegalizeOps(customize_legalize_map=L.legalize_map())(_int32_layer(w))
    kernel = next(f for f in legal.functions.values() if isinstance(f, tvm.tirx.PrimFunc) and f.attrs is not None
                  and str(f.attrs.get(L.KERNEL_ATTR, "")) == "conv2d_uint8_int32_paired")
    m = hot_loop(tvm.tirx.build(kernel.with_attr("global_symbol", "k"), target=rpi4).inspect_source("asm")).mnemonics
    assert m.get("smull", 0) == m.get("smlal2", 0) == m.get("sadalp", 0) > 0 and "smlal" not in m, m


@pytest.mark.parametrize("case", ["conv_nhwc", "conv_im2col", "dense"])
def test_fused_epilogue_and_symbolic_batch_bit_exact(case):
    """The kernel as the build emits it (``fuse.py``): a symbolic batch and the requantize epilogue (bias, shift,
    clip, narrow to uint8) applied to each int32 sum in the unpacking; equals the int64 reference through the same
    epilogue in numpy (desc loops on x86, ``neon=False``)."""
    from tvm_fxp.schedules.epilogue import Epilogue

    rng = np.random.default_rng(5)
    if case == "dense":
        x, w = operands(rng, (3, 70), (70, 12), "uint8")
        plan = paired.plan_paired_dense((tvm.tirx.Var("m", "int64"), 70), (70, 12), "uint8")
        acc = dense_ref(x, w)
    else:
        c = 32 if case == "conv_nhwc" else 5
        x, w = operands(rng, (2, c, 7, 6), (9, c, 3, 3), "uint8")
        plan = paired.plan_paired_conv2d(x.shape, w.shape, "uint8", padding=(1, 1, 1, 1))
        acc = conv2d_ref(x, w, (1, 1), (1, 1, 1, 1))
    assert plan.depth_order == {"conv_nhwc": "nhwc", "conv_im2col": "im2col", "dense": "im2col"}[case]
    bias = rng.integers(-5000, 5000, w.shape[0] if case != "dense" else w.shape[1]).astype("int32")
    epi = Epilogue([("relax.add", [("v", -1), ("c", 0)], "int32"),
                    ("relax.right_shift", [("v", 0), ("s", 7, "int32")], "int32"),
                    ("relax.maximum", [("v", 1), ("s", 0, "int32")], "int32"),
                    ("relax.minimum", [("v", 2), ("s", 255, "int32")], "int32"),
                    ("relax.astype", [("v", 3)], "uint8")], [bias], "uint8")
    pack_func, offset_func, kernel_func = paired.paired_primfuncs(plan, batch=None, neon=False, epilogue=epi)
    packed = tvm.runtime.empty(plan.packed_weight_shape, "int8")
    tvm.tirx.build(pack_func, target="llvm")(tvm.runtime.tensor(w), packed)
    off = tvm.runtime.empty((len(bias),), "int32")
    tvm.tirx.build(offset_func, target="llvm")(tvm.runtime.tensor(w), off)
    out = tvm.runtime.empty(acc.shape, "uint8")
    tvm.tirx.build(kernel_func, target="llvm")(tvm.runtime.tensor(x), packed, off, tvm.runtime.tensor(bias), out)
    shape = [1] * acc.ndim
    shape[1] = -1       # channels: axis 1 of NCHW and of (M, N)
    expected = np.clip((acc + bias.reshape(shape)) >> 7, 0, 255)
    np.testing.assert_array_equal(out.numpy(), expected)
