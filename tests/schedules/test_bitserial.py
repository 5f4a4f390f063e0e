"""The multiply-free bit-serial conv2d (schedules/bitserial.py) against the int64 numpy conv.

On x86 the schedule runs with the fold's desc loops (``neon=False``); the NEON code is checked structurally
here (eor/and/cnt/add .16b, no multiply in the hot loop) and bit for bit under qemu in test_arm_emulated.py.
Weights are ternary levels {-1, 0, 1} (as realize.py stores a ternary layer), data uint8 in [0, 2**bits).
"""

import numpy as np
import pytest
import tvm
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tools.asm import loops, mul_lanes
from tvm_fxp.schedules import bitserial as bs
from tvm_fxp.schedules import preset

from .reference import conv2d_ref

SETTINGS = settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def run_bitserial(plan, x, w, neon=False, target="llvm"):
    lib = tvm.tirx.build(bs.bitserial_primfunc(plan, batch=x.shape[0], neon=neon), target=target)
    out = tvm.runtime.empty((x.shape[0], plan.out_channels, *plan.out_hw), "int32")
    lib(tvm.runtime.tensor(x), tvm.runtime.tensor(bs.pack_weight_masks(w, plan)),
        tvm.runtime.tensor(bs.weight_offset(w, plan)), out)
    return out.numpy()


def operands(rng, x_shape, w_shape, bits):
    x = rng.integers(0, 1 << bits, x_shape)
    x.flat[rng.integers(0, x.size, max(1, x.size // 3))] = (1 << bits) - 1     # full planes: the int8 extremes
    w = rng.integers(-1, 2, w_shape)
    return x.astype("uint8"), w.astype("int8")


@given(c=st.integers(1, 40), oc=st.integers(1, 19), k=st.sampled_from([1, 3, 5]), s=st.integers(1, 2),
       pad=st.integers(0, 2), hw=st.integers(3, 20), bits=st.integers(1, 4), n=st.integers(1, 2),
       lanes=st.sampled_from(["depth", "positions"]), seed=st.integers(0, 2**31))
@example(c=1, oc=1, k=1, s=1, pad=0, hw=3, bits=1, n=1, lanes="positions", seed=0)   # every loop of extent 1
@example(c=1, oc=1, k=1, s=1, pad=0, hw=3, bits=1, n=1, lanes="depth", seed=0)
@SETTINGS
def test_bitserial_conv2d_bit_exact(c, oc, k, s, pad, hw, bits, n, lanes, seed):
    hw = max(hw, k - 2 * pad)
    x, w = operands(np.random.default_rng(seed), (n, c, hw, hw), (oc, c, k, k), bits)
    plan = bs.plan_bitserial_conv2d(x.shape, w.shape, bits, strides=(s, s), padding=(pad,) * 4, lanes=lanes)
    np.testing.assert_array_equal(run_bitserial(plan, x, w), conv2d_ref(x, w, (s, s), (pad,) * 4))


def test_deep_reduction_runs_several_int8_blocks_exactly():
    """C*KH*KW = 2304 depth values = 18 chunks > 15: two int8 accumulation blocks of 9 chunks (positions
    layout: 20 blocks of 15 bytes); every weight +1 and every value 15 drive each int8 lane to its largest sum
    (9 * 8 = 72, and 15 * 8 = 120, per plane and block)."""
    x = np.full((1, 256, 3, 3), 15, np.uint8)
    w = np.ones((3, 256, 3, 3), np.int8)
    w[1] = -1
    w[2, ::2] = 0
    plan = bs.plan_bitserial_conv2d(x.shape, w.shape, 4, padding=(1, 1, 1, 1), lanes="depth")
    assert (plan.k_blocks, plan.steps) == (2, 9)
    np.testing.assert_array_equal(run_bitserial(plan, x, w), conv2d_ref(x, w, (1, 1), (1, 1, 1, 1)))
    plan = bs.plan_bitserial_conv2d(x.shape, w.shape, 4, padding=(1, 1, 1, 1), lanes="positions")
    assert (plan.k_blocks, plan.steps) == (20, 15)      # 9 taps x 32 channel bytes
    np.testing.assert_array_equal(run_bitserial(plan, x, w), conv2d_ref(x, w, (1, 1), (1, 1, 1, 1)))
    np.testing.assert_array_equal(run_bitserial(plan, x, w), conv2d_ref(x, w, (1, 1), (1, 1, 1, 1)))


def test_masks_and_conditions():
    """The masks are the -1 and the nonzero weights bit by bit in the kernel's depth order, the offset counts the
    -1 weights times 2**B - 1; non-ternary weights, too many activation bits and grouped convs are refused with the
    alternative named."""
    plan = bs.plan_bitserial_conv2d((1, 16, 4, 4), (2, 16, 3, 3), 2, lanes="depth")
    w = np.zeros((2, 16, 3, 3), np.int8)
    w[0, 5, 0, 1] = 1        # depth (ky=0, kx=1, c=5) = 21 = 16 * 1 + 5: bit 1 of byte 5 of chunk 0
    w[1, 0, 2, 2] = -1       # depth 8 * 16 + 0 = 128: bit 0 of byte 0 of chunk 1
    m = bs.pack_weight_masks(w, plan)
    assert m.shape == plan.packed_weight_shape and m.sum(dtype=np.int64) == 2 + 1 + 1
    assert m[0, 0, 1, 5] == 2 and m[1, 1, 0, 0] == m[1, 1, 1, 0] == 1 and m[0, 0, 0, 5] == 0
    assert bs.weight_offset(w, plan).tolist() == [0, -3]
    pos = bs.plan_bitserial_conv2d((1, 16, 4, 4), (2, 16, 3, 3), 2, lanes="positions")
    m = bs.pack_weight_masks(w, pos)        # byte = (tap, 8 channels): tap 1 channels 0-7 -> byte 2, bit 5
    assert m.shape == pos.packed_weight_shape == (2, 18, 2, 16) and m.sum(dtype=np.int64) == (32 + 1 + 1) * 16
    assert np.all(m[0, 2, 1] == 32) and np.all(m[0, 2, 0] == 0) and np.all(m[1, 16] == 1)
    with pytest.raises(ValueError, match="not ternary"):
        bs.pack_weight_masks(w * 2, plan)
    with pytest.raises(ValueError, match="1..4 bits"):
        bs.plan_bitserial_conv2d((1, 16, 4, 4), (2, 16, 3, 3), 8)
    with pytest.raises(ValueError, match="conv2d_int"):
        bs.plan_bitserial_conv2d((1, 16, 4, 4), (2, 8, 3, 3), 4)
    assert bs.is_ternary(w) and not bs.is_ternary(w * 2)


def test_layout_choice_follows_the_padded_work():
    """Many positions: 16 positions per register (depth padded to 8 channels per tap); one position (a dense
    layer as a 1x1 conv): 128 depth values per register."""
    assert isinstance(bs.plan_bitserial_conv2d((1, 32, 14, 14), (32, 32, 3, 3), 4, padding=(1,) * 4),
                      bs.PositionLanesPlan)
    assert not isinstance(bs.plan_bitserial_conv2d((1, 1568, 1, 1), (128, 1568, 1, 1), 4), bs.PositionLanesPlan)


def test_neon_positions_hot_loop_is_multiply_free():
    """Positions layout on the Pi: per depth byte, one eor/and/cnt .16b per (output, plane) -- ``(X_b ^ M) & N`` --,
    broadcast masks."""
    plan = bs.plan_bitserial_conv2d((1, 32, 14, 14), (32, 32, 3, 3), 4, padding=(1, 1, 1, 1), lanes="positions")
    asm = tvm.tirx.build(bs.bitserial_primfunc(plan), target=preset("rpi4")).inspect_source("asm")
    hot = max(loops(asm), key=lambda lp: lp.mnemonics.get("cnt", 0))
    vector_and = sum(1 for i in hot.lines if i.split()[0] == "and" and i.split()[1].endswith(".16b,"))
    assert hot.mnemonics.get("cnt") == vector_and == hot.mnemonics.get("eor") == plan.tile[1] * plan.bits, hot.mnemonics
    assert sum(mul_lanes(i) for i in hot.lines) == 0


def test_neon_hot_loop_is_multiply_free():
    """Cross-compiled for the Pi: the hot loop is eor/and/cnt .16b with add .16b accumulation, one of each per
    (output, plane) per 16 bytes, and no multiply; the fold uses saddlv."""
    plan = bs.plan_bitserial_conv2d((1, 32, 14, 14), (32, 32, 3, 3), 4, padding=(1, 1, 1, 1), lanes="depth")
    asm = tvm.tirx.build(bs.bitserial_primfunc(plan), target=preset("rpi4")).inspect_source("asm")
    hot = max(loops(asm), key=lambda lp: lp.mnemonics.get("cnt", 0))
    r, c = plan.tile
    pairs = r * c * plan.bits * plan.steps
    assert hot.mnemonics.get("cnt") == hot.mnemonics.get("and") == hot.mnemonics.get("eor") == pairs, hot.mnemonics
    assert all(i.split()[1].endswith(".16b,") for i in hot.lines if i.split()[0] in ("cnt", "and"))
    assert sum(mul_lanes(i) for i in hot.lines) == 0 and "saddlv" in hot.mnemonics


@pytest.mark.parametrize("xs, ws", [((1, 130, 3, 3), (3, 130, 3, 3)), ((1, 1568, 1, 1), (6, 1568, 1, 1))])
def test_channels_that_do_not_divide_a_chunk(xs, ws):
    """Channel counts past one 128-value chunk that do not divide it (a ternary dense layer as a 1x1 conv on a
    1x1 map: 1568 = 12.25 chunks): every depth value of the gather is packed (TVM's region inference under
    compute_at once left two of 129 channels unwritten)."""
    x, w = operands(np.random.default_rng(1), xs, ws, 4)
    plan = bs.plan_bitserial_conv2d(xs, ws, 4, padding=(1, 1, 1, 1) if ws[2] == 3 else (0, 0, 0, 0), lanes="depth")
    np.testing.assert_array_equal(run_bitserial(plan, x, w), conv2d_ref(x, w, (1, 1), plan.padding))


# ---- as the build uses it: sums as the graph's accumulator, the requantize epilogue fused, dense layers -----------

def requantize_epilogue(rng, oc):
    """A ternary layer's epilogue as Realize writes it: cluster multiplier m, bias, rounding shift, saturate to
    4 bits, uint8 (``epilogue.Epilogue`` steps, per-channel constants)."""
    from tvm_fxp.schedules.epilogue import Epilogue

    m, bias = rng.integers(129, 256, oc).astype("int32"), rng.integers(-3000, 3000, oc).astype("int32")
    steps = [("relax.multiply", [("v", -1), ("c", 0)], "int32"), ("relax.add", [("v", 0), ("c", 1)], "int32"),
             ("relax.add", [("v", 1), ("s", 1 << 9, "int32")], "int32"),
             ("relax.right_shift", [("v", 2), ("s", 10, "int32")], "int32"),
             ("relax.maximum", [("v", 3), ("s", 0, "int32")], "int32"),
             ("relax.minimum", [("v", 4), ("s", 15, "int32")], "int32"), ("relax.astype", [("v", 5)], "uint8")]

    def ref(acc, axis):
        shape = [1] * acc.ndim
        shape[axis] = oc
        v = acc.astype(np.int64) * m.reshape(shape) + bias.reshape(shape)
        return np.clip((v + (1 << 9)) >> 10, 0, 15).astype("uint8")
    return Epilogue(steps, [m, bias], "uint8"), ref


@given(c=st.integers(1, 40), oc=st.integers(1, 19), k=st.sampled_from([1, 3]), hw=st.integers(3, 18),
       bits=st.integers(1, 4), n=st.integers(1, 2), lanes=st.sampled_from(["depth", "positions"]),
       acc=st.sampled_from(["int16", "int32"]), fused=st.booleans(), seed=st.integers(0, 2**31))
@example(c=16, oc=16, k=3, hw=14, bits=4, n=1, lanes="positions", acc="int32", fused=True, seed=0)
@SETTINGS
def test_bitserial_finish_bit_exact(c, oc, k, hw, bits, n, lanes, acc, fused, seed):
    """The build's kernel: the sums cast to the graph's accumulator (int16 where proven) and/or the requantize
    epilogue applied row by row (symbolic batch), equal to the numpy conv followed by the same integer steps."""
    rng = np.random.default_rng(seed)
    x, w = operands(rng, (n, c, hw, hw), (oc, c, k, k), bits)
    pad = (k // 2,) * 4
    plan = bs.plan_bitserial_conv2d(x.shape, w.shape, bits, padding=pad, lanes=lanes, acc_dtype=acc)
    epi, ref = requantize_epilogue(rng, oc) if fused else (None, None)
    func = bs.bitserial_primfunc(plan, None, neon=False, epilogue=epi)
    lib = tvm.tirx.build(func, target="llvm")
    expected = conv2d_ref(x, w, (1, 1), pad)
    expected = ref(expected, 1) if fused else expected.astype(acc)
    out = tvm.runtime.empty(expected.shape, str(expected.dtype))
    consts = [tvm.runtime.tensor(cst) for cst in epi.consts] if fused else []
    lib(tvm.runtime.tensor(x), tvm.runtime.tensor(bs.pack_graph_weight(w, plan)),
        tvm.runtime.tensor(bs.graph_weight_offset(w, plan)), *consts, out)
    np.testing.assert_array_equal(out.numpy(), expected)


@given(k=st.integers(1, 1600), n_out=st.integers(1, 40), m=st.integers(1, 3), bits=st.integers(1, 4),
       fused=st.booleans(), seed=st.integers(0, 2**31))
@example(k=1568, n_out=128, m=1, bits=4, fused=True, seed=0)       # the reference vgg's ternary dense layer
@SETTINGS
def test_bitserial_dense_bit_exact(k, n_out, m, bits, fused, seed):
    """A ternary matmul ``(M, K) @ (K, N)`` (weights as the graph holds them, ``(K, N)``) at a symbolic M."""
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 1 << bits, (m, k)).astype("uint8")
    b = rng.integers(-1, 2, (k, n_out)).astype("int8")
    plan = bs.plan_bitserial_dense((m, k), b.shape, bits)
    epi, ref = requantize_epilogue(rng, n_out) if fused else (None, None)
    lib = tvm.tirx.build(bs.bitserial_primfunc(plan, None, neon=False, epilogue=epi), target="llvm")
    expected = a.astype(np.int64) @ b.astype(np.int64)
    expected = ref(expected, 1) if fused else expected.astype("int32")
    out = tvm.runtime.empty(expected.shape, str(expected.dtype))
    consts = [tvm.runtime.tensor(cst) for cst in epi.consts] if fused else []
    lib(tvm.runtime.tensor(a), tvm.runtime.tensor(bs.pack_graph_weight(b, plan)),
        tvm.runtime.tensor(bs.graph_weight_offset(b, plan)), *consts, out)
    np.testing.assert_array_equal(out.numpy(), expected)
