"""The VNNI conv2d kernel with blocked activations (NCHW16c in and/or out, ``schedules/conv2d_vnni.py``),
bit-exact against the int64 numpy desc; the blocked tensors are made and read with numpy here."""

import numpy as np
import pytest

from tvm_fxp.schedules import conv2d_primfuncs, host, kernel_config, plan_conv2d

from .reference import conv2d_ref, random_operands, run_kernel

HOST = host()
CONFIG = kernel_config(HOST, "int32")
pytestmark = pytest.mark.skipif(not CONFIG.vnni, reason="the host has no AVX-512 VNNI")


def to_blocked(x: np.ndarray) -> np.ndarray:
    """NCHW -> (N, C/16, H, W, 16), channels padded with a marker value the kernel must ignore."""
    n, c, h, w = x.shape
    cb = -(-c // 16)
    out = np.full((n, cb * 16, h, w), 77, x.dtype)
    out[:, :c] = x
    return np.ascontiguousarray(out.reshape(n, cb, 16, h, w).transpose(0, 1, 3, 4, 2))


def from_blocked(y: np.ndarray, c: int) -> np.ndarray:
    n, cb, h, w, _ = y.shape
    return y.transpose(0, 1, 4, 2, 3).reshape(n, cb * 16, h, w)[:, :c]


@pytest.mark.parametrize("case", [
    # (dtype, C, OC, HxW, kernel, stride, padding, data blocked, out blocked)
    ("uint8", 32, 48, 14, 1, 1, 0, True, True),     # 1x1 read in place, 196 positions (block 14)
    ("int8", 16, 32, 7, 3, 1, 1, True, True),       # 3x3 pad 1, int8 shifted in the pad copy, block 7
    ("uint8", 48, 16, 9, 3, 2, 1, True, False),     # strided 3x3, NCHW out (phantom positions padded)
    ("int8", 3, 32, 12, 3, 2, 1, False, True),      # RGB stem: NCHW in, blocked out
    ("uint8", 32, 16, 8, 1, 2, 0, True, True),      # strided 1x1 read in place
])
def test_blocked_vnni_conv2d_matches_reference(case):
    dtype, c, oc, hw, k, s, p, data_blocked, out_blocked = case
    rng = np.random.default_rng(c * oc + hw)
    x, w = random_operands(rng, (1, c, hw, hw), (oc, c, k, k), dtype, "int32", c * k * k)
    expected = conv2d_ref(x, w, (s, s), (p,) * 4)
    cp = -(-c // 16) * 16 if data_blocked else c
    wp = np.zeros((oc, cp, k, k), np.int8)
    wp[:, :c] = w                       # the graph pass gives the padding channels zero weights
    plan = plan_conv2d((1, cp, hw, hw), wp.shape, dtype, "int32", (s, s), (p,) * 4, config=CONFIG,
                       data_layout="NCHW16c" if data_blocked else "NCHW",
                       out_layout="NCHW16c" if out_blocked else "NCHW")
    assert plan.layout == "vnni"
    data = to_blocked(x) if data_blocked else x
    oh = expected.shape[2]
    out_shape = (1, oc // 16, oh, oh, 16) if out_blocked else expected.shape
    got = run_kernel(conv2d_primfuncs(plan), plan, data, wp, out_shape, HOST, oc)
    got = from_blocked(got, oc) if out_blocked else got
    np.testing.assert_array_equal(got.astype(np.int64), expected, err_msg=str(plan))


def test_blocked_layouts_need_blocks_of_16():
    with pytest.raises(ValueError, match="blocks of 16"):
        plan_conv2d((1, 24, 8, 8), (16, 24, 1, 1), "uint8", "int32", config=CONFIG, data_layout="NCHW16c")
    with pytest.raises(ValueError, match="register block"):
        plan_conv2d((1, 16, 17, 17), (16, 16, 1, 1), "uint8", "int32", config=CONFIG, out_layout="NCHW16c")


@pytest.mark.parametrize("dtype,c,hw,k,s,p", [
    ("uint8", 32, 14, 3, 1, 1),      # MobileNetV2's 3x3: 14 columns, tiles of 8 overlapping
    ("int8", 16, 9, 3, 2, 1),        # strided, int8 stored as x + 128
    ("uint8", 48, 7, 5, 1, 2),       # 5x5: two tap groups per row
    ("int8", 16, 5, 3, 1, 0),        # no padding, 3 output columns
])
def test_blocked_depthwise_matches_reference(dtype, c, hw, k, s, p):
    if not CONFIG.vbmi:
        pytest.skip("the host has no AVX-512 VBMI")
    rng = np.random.default_rng(c + hw)
    x, w = random_operands(rng, (1, c, hw, hw), (c, 1, k, k), dtype, "int32", k * k)
    expected = conv2d_ref(x, w, (s, s), (p,) * 4, groups=c)
    plan = plan_conv2d(x.shape, w.shape, dtype, "int32", (s, s), (p,) * 4, groups=c, config=CONFIG,
                       data_layout="NCHW16c", out_layout="NCHW16c")
    assert plan.layout == "depthwise_vnni"
    oh = expected.shape[2]
    got = run_kernel(conv2d_primfuncs(plan), plan, to_blocked(x), w, (1, c // 16, oh, oh, 16), HOST, c)
    np.testing.assert_array_equal(from_blocked(got, c).astype(np.int64), expected, err_msg=str(plan))
