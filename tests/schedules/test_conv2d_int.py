"""conv2d kernels (schedules/conv2d_int.py) bit-exact against the int64 numpy desc on the host CPU.

Each example builds the kernel for the host target with either the host's vector shape or the Raspberry
Pi 4's (same TIR schedule as on the Pi, compiled for x86), so the Pi's layout and blocking are checked
natively here and the Pi's code generation in test_arm_emulated.py.  int16 kernels only get operands whose
L1 bound (computed below) is under 2**15, as Realize guarantees.
"""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tvm_fxp.schedules import conv2d_primfuncs, host, kernel_config, plan_conv2d, preset

from .reference import INT16_LIMIT, conv2d_l1_bound, conv2d_ref, random_operands, run_kernel

HOST = host()
CONFIG_TARGETS = {"host": HOST, "rpi4": preset("rpi4")}
SETTINGS = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def conv_cases(draw, acc_dtype):
    kind = draw(st.sampled_from(["regular", "grouped", "depthwise", "pointwise"]))
    groups = {"regular": 1, "pointwise": 1, "grouped": draw(st.integers(2, 4)),
              "depthwise": draw(st.integers(1, 20))}[kind]
    icg = 1 if kind == "depthwise" else draw(st.integers(1, 6))
    ocg = draw(st.integers(1, 2)) if kind == "depthwise" else draw(st.integers(1, 40))
    k = (1, 1) if kind == "pointwise" else (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    strides = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    dilation = (1, 1) if kind == "pointwise" else (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    padding = tuple(draw(st.integers(0, 2)) for _ in range(4))
    h = draw(st.integers(max(1, dilation[0] * (k[0] - 1) + 1 - padding[0] - padding[2]), 13))
    w = draw(st.integers(max(1, dilation[1] * (k[1] - 1) + 1 - padding[1] - padding[3]), 13))
    batch = draw(st.integers(1, 2))
    dtype = draw(st.sampled_from(["int8", "uint8"]))
    config = draw(st.sampled_from(sorted(CONFIG_TARGETS)))
    seed = draw(st.integers(0, 2**31))
    return dict(x_shape=(batch, icg * groups, h, w), w_shape=(ocg * groups, icg, *k), strides=strides,
                padding=padding, dilation=dilation, groups=groups, dtype=dtype, acc=acc_dtype,
                config=config, seed=seed)


def check(case):
    rng = np.random.default_rng(case["seed"])
    x, w = random_operands(rng, case["x_shape"], case["w_shape"], case["dtype"], case["acc"],
                           int(np.prod(case["w_shape"][1:])))
    if case["acc"] == "int16":
        bound = conv2d_l1_bound(np.abs(x.astype(np.int64)).max(), w)
        assert bound < INT16_LIMIT, "test precondition: Realize only uses int16 when the L1 bound fits"
    config = kernel_config(CONFIG_TARGETS[case["config"]], case["acc"])
    plan = plan_conv2d(x.shape, w.shape, case["dtype"], case["acc"], case["strides"], case["padding"],
                       case["dilation"], case["groups"], config=config)
    expected = conv2d_ref(x, w, case["strides"], case["padding"], case["dilation"], case["groups"])
    got = run_kernel(conv2d_primfuncs(plan), plan, x, w, expected.shape, HOST, w.shape[0])
    assert got.dtype == np.dtype(case["acc"])
    np.testing.assert_array_equal(got.astype(np.int64), expected, err_msg=str(plan))


@SETTINGS
@given(conv_cases("int16"))
def test_conv2d_int16_matches_reference(case):
    check(case)


@SETTINGS
@given(conv_cases("int32"))
def test_conv2d_int32_matches_reference(case):
    check(case)


@pytest.mark.parametrize("dtype", ["int8", "uint8"])
def test_int16_exact_when_only_the_result_fits(dtype):
    """Partial sums leave the int16 range (the L1 bound is ~2**23) but every result fits: the adds wrap
    modulo 2**16, so the kernel must still be exact (this also covers uint8's ``x - 128`` offset).

    The weights are a large part that cancels (kernel columns 0 and 2 opposite; channel pairs opposite in
    column 1, on data constant per channel pair) plus a small random part that carries the result.
    """
    rng = np.random.default_rng(7)
    lo, hi = (-128, 127) if dtype == "int8" else (0, 255)
    x = np.repeat(rng.integers(lo, hi + 1, 16), 2)[None, :, None, None] * np.ones((1, 32, 7, 6), np.int64)
    big = np.where(rng.integers(0, 2, (16, 32, 3, 3)) > 0, 120, -120)
    big[:, :, :, 2] = -big[:, :, :, 0]
    big[:, 1::2, :, 1] = -big[:, 0::2, :, 1]
    small = rng.integers(-3, 4, big.shape) * (rng.random(big.shape) < 0.1)
    x, w = x.astype(dtype), (big + small).astype("int8")
    expected = conv2d_ref(x, w)
    np.testing.assert_array_equal(expected, conv2d_ref(x, small))      # the large part cancels
    assert 0 < np.abs(expected).max() < INT16_LIMIT
    assert conv2d_l1_bound(np.abs(x.astype(np.int64)).max(), w) > 64 * INT16_LIMIT
    plan = plan_conv2d(x.shape, w.shape, dtype, "int16", target=HOST)
    got = run_kernel(conv2d_primfuncs(plan), plan, x, w, expected.shape, HOST, w.shape[0])
    np.testing.assert_array_equal(got.astype(np.int64), expected)


def test_int16_adds_wrap_in_the_generated_ir():
    """The wrap argument needs plain (non-``nsw``) 16-bit vector adds in the LLVM IR TVM emits: with ``nsw``
    an overflowing partial sum would be poison.  Guards against a TVM/LLVM change."""
    import re

    import tvm

    for config in CONFIG_TARGETS.values():
        # layout "channels": the int16 multiply-add kernels (layout "vnni" accumulates in int32, no wrap)
        plan = plan_conv2d((1, 16, 9, 9), (16, 16, 3, 3), "uint8", "int16", padding=(1, 1, 1, 1),
                           config=kernel_config(config, "int16"), layout="channels")
        ll = tvm.tirx.build(conv2d_primfuncs(plan)[2], target=HOST).inspect_source("ll")
        adds = re.findall(r"= (add|sub)( nsw| nuw)* <\d+ x i16>", ll)
        assert adds and not any(flags for _, flags in adds), adds


def test_layout_choice():
    cfg = kernel_config(preset("rpi4"), "int16")
    assert plan_conv2d((1, 32, 8, 8), (32, 1, 3, 3), "int8", "int16", groups=32, config=cfg).layout == "groups"
    assert plan_conv2d((1, 32, 8, 8), (64, 32, 3, 3), "int8", "int16", config=cfg).layout == "channels"
    p = plan_conv2d((1, 16, 28, 28), (16, 16, 3, 3), "uint8", "int16", padding=(1, 1, 1, 1), config=cfg)
    assert (p.lanes, p.block, p.padded_positions) == (16, 8, 784)
    with pytest.raises(ValueError, match="groups"):
        plan_conv2d((1, 6, 8, 8), (4, 3, 3, 3), "int8", "int16", groups=3, config=cfg)
    with pytest.raises(ValueError, match="dtype"):
        plan_conv2d((1, 4, 8, 8), (4, 4, 3, 3), "int16", "int32", config=cfg)


@pytest.mark.parametrize("dtype,oc,hw", [("int8", 20, 13), ("uint8", 16, 16)])
def test_rgb_stem_on_the_host(dtype, oc, hw):
    """A 3-channel stem (7x7/2, pad 3) on the host: on AVX-512 VNNI it takes the VNNI kernel (channels padded
    to 4) and, like every layout, its output unpacking by 16x16 tiles (20 channels, 49 positions: partial
    tiles) gives the reference integers."""
    cfg = kernel_config(HOST, "int32")
    plan = plan_conv2d((1, 3, hw, hw), (oc, 3, 7, 7), dtype, "int32", (2, 2), (3, 3, 3, 3), config=cfg)
    assert plan.layout == ("vnni" if cfg.vnni else plan.layout)
    check(dict(x_shape=(1, 3, hw, hw), w_shape=(oc, 3, 7, 7), strides=(2, 2), padding=(3, 3, 3, 3),
               dilation=(1, 1), groups=1, dtype=dtype, acc="int32", config="host", seed=7))
