"""Multiply-free bit-serial conv2d for ternary weights and low-bit unsigned activations on ARMv8.0 NEON.

Mellempudi et al.'s ternary layers realize (``passes/realize.py``) as a conv2d whose stored weights are the
levels ``{-1, 0, +1}`` followed by one integer multiply per output channel; with activations of ``B <= 4``
unsigned bits the sum needs no multiply at all.  Bit-serial form (TVM's ``topi/arm_cpu/bitserial_conv2d.py``
and its ``_intrin_popcount``; Cowan et al., CGO 2020), with the reduction axis ``k`` (the layer's ``(ky, kx,
c)`` depth, zero-padded as the layout below needs) packed into bits, ``X_b[p]`` bit plane ``b`` of the data,
``M[o]`` the mask of the ``-1`` weights and ``N[o]`` the mask of the nonzero ones (packed at compile time from the
constant weights, ``pack_weight_masks``, numpy)::

    sum_k w[o, k] x[p, k] = sum_b 2**b * popcount((X_b[p] ^ M[o]) & N[o])  -  (2**B - 1) * popcount(M[o])

(a ``+1`` weight counts ``x_b``, a ``-1`` weight ``1 - x_b``; the constant is ``weight_offset``, added per output
at the end).  That is one ``eor``, one ``and``, one ``cnt`` and one ``add .16b`` per (output, plane) per 16 bytes,
all on either ASIMD pipe of the A72 (F0/F1): ``4 B`` ops, ``2 B`` cycles per 128 products (``B = 4``: 16 MACs per
cycle, against the 8 of the best int8 kernel, bound by the one multiply pipe).  The textbook form,
``popcount(P & X_b) - popcount(M & X_b)``, takes six ops per pair.

Two layouts, chosen per layer by the padded work (``plan_bitserial_conv2d(..., lanes="auto")``,
``padded_work``):

- ``"positions"`` (``PositionLanesPlan``, layers with many positions): the 16 byte lanes hold 16 output
  positions of one output row, a byte holds 8 channels of one tap (depth ``(ky, kx, c)``, channels padded to 8),
  and each output's masks are one byte per 8 depth values, repeated over the 16 lanes at compile time (a plain
  ``ldr q``; ``ld1r`` would take an ASIMD pipe slot).  Each lane is one position's sum: the int8 per-plane
  accumulators are folded per block with ``sshll``/``add .8h`` (int16), no horizontal reduction.  Stages:
  ``data_pad`` (zero-padded NCHW) -> ``planes`` (per row group, Horner ``ushr`` + ``sli`` over the 8 channels
  of a byte) -> ``bitserial`` -> ``fold`` -> ``unpack``.  Hot loop: 10.65 MACs/cycle (llvm-mca A72, 4 outputs x
  4 planes per step).
- ``"depth"`` (``BitserialPlan``, few positions: a dense layer as a 1x1 conv on a 1x1 map): one output position
  per register, 128 depth values per 16 bytes (bit ``i`` of byte ``j`` of chunk ``kc`` holds depth ``128 kc +
  16 i + j``, so packing a plane is 8 vector loads of 16 contiguous depth values, no transposition).  Stages:
  ``data_nhwc`` -> ``data_col`` (the ``(ky, kx, c)`` depth gathered tap by tap, zero-padded to whole chunks)
  -> ``planes`` -> ``bitserial`` (int8 per-lane accumulators for an ``R x C`` block and all planes) -> ``fold``
  (16 lanes x ``B`` planes weighted by ``2**b`` and summed: ``saddlp``, Horner ``shl``/``add .8h``,
  ``saddlv``: the ``FOLD_BITS`` tensor intrinsic) -> ``unpack``.

In both, each step adds ``[0, 8]`` to an int8 lane: exact for up to ``MAX_STEPS = 15`` steps; deeper layers
run ``ko`` blocks of at most 15 steps, each folded into wider sums.  With stride 1 along the rows the positions
layout packs each input row's planes once per image and reads tap ``(ky, kx)`` as an unaligned 16-byte load
(``PositionLanesPlan.row_planes``); otherwise it packs per tap.

Exact when: weights in ``{-1, 0, 1}`` (``is_ternary``), data ``uint8`` in ``[0, 2**B)`` (the plan's activation
format says so; bits above ``B`` are ignored), groups 1.

In the build (``legalize.bitserial_decision``): an aarch64 layer with constant ternary weights whose data the
producer's saturate proves ``< 16`` (``legalize.data_upper_bound``) gets this kernel when ``estimated_cycles`` (a
whole-kernel model fitted to bench/arm_static.py's measurements) is below 0.96 of the paired int32 kernel's.
There a ``finish`` stage casts each exact int32 sum to the graph's accumulator dtype and applies the fused
requantize epilogue (cluster multiplier, bias, rounding shift, saturate) a row at a time; the masks are packed
from the constant weights at compile time (``pack_graph_weight``); dense layers (``plan_bitserial_dense``) read
their ``(M, K)`` rows directly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from tvm import te, tirx
from tvm.s_tir import Schedule, TensorIntrin
from tvm.script import tirx as T

from .common import GemmGeometry, ceil_div as _ceil_div
from .epilogue import const_placeholders

LANES = 16                 # bytes per NEON register
CHUNK = 8 * LANES          # depth values per 16-byte mask
MAX_STEPS = 15             # int8 lanes: sum <= 15 * 8 = 120 < 128
REGISTERS = 32
MAX_BITS = 4


def is_ternary(weight: np.ndarray) -> bool:
    """Every weight is -1, 0 or +1 (the stored levels of a ternary layer)."""
    w = np.asarray(weight)
    return bool(np.all((w >= -1) & (w <= 1)))


def choose_tile(rows: int, cols: int, bits: int) -> tuple:
    """``(R, C)``: ``R*C*B`` int8 accumulators + ``R*B`` data planes + ``2C`` masks + 2 temporaries within the 32
    registers; least padded work first, then the largest block (fewest loop overheads and reloads)."""
    best = None
    for r in range(1, min(rows, 8) + 1):
        for c in range(1, min(cols, 8) + 1):
            if r * c * bits + r * bits + 2 * c + 2 > REGISTERS:
                continue
            key = (-_ceil_div(rows, r) * r * _ceil_div(cols, c) * c, r * c, c)
            if best is None or key > best[0]:
                best = (key, r, c)
    return best[1], best[2]


@dataclass(frozen=True)
class BitserialPlan(GemmGeometry):
    """A conv2d (NCHW/OIHW, groups 1) with ternary weights and ``bits``-bit uint8 data."""

    channels: int
    out_channels: int
    height: int
    width: int
    kernel: tuple = (1, 1)
    strides: tuple = (1, 1)
    padding: tuple = (0, 0, 0, 0)
    dilation: tuple = (1, 1)
    bits: int = 4
    tile: tuple = (1, 1)
    dense: bool = False        # a matmul ``(M, K) @ (K, N)``: data ``(M, K)``, run as a 1x1 conv on a 1x1 map
    acc_dtype: str = "int32"   # the sums' dtype (int16 when the graph's proof says they fit: a cast)

    data_dtype = "uint8"
    weight_dtype = "int8"
    packed_weight_dtype = "uint8"     # the -1 / nonzero masks
    offset_dtype = "int32"     # weight_offset
    offset_data = True
    layout = "bitserial"

    @property
    def kind(self) -> str:
        return "dense" if self.dense else "conv2d"

    @property
    def lanes(self) -> str:
        """``"positions"`` (``PositionLanesPlan``) or ``"depth"``: what the 16 byte lanes of a register hold."""
        return "depth"

    @property
    def used_units(self) -> int:
        """The depth in the units one step adds per lane: 128-value chunks here (``PositionLanesPlan``: bytes)."""
        return _ceil_div(self.reduce, CHUNK)

    unit_values = CHUNK        # depth values per unit

    @property
    def steps(self) -> int:
        """Units per int8 accumulation block (``T <= 15``), as even as possible."""
        return _ceil_div(self.used_units, _ceil_div(self.used_units, MAX_STEPS))

    @property
    def k_blocks(self) -> int:
        return _ceil_div(self.used_units, self.steps)

    @property
    def chunks(self) -> int:
        """The padded depth in units (``PositionLanesPlan.depth_bytes``)."""
        return self.k_blocks * self.steps

    @property
    def padded_reduce(self) -> int:
        return self.chunks * self.unit_values

    @property
    def packed_weight_shape(self) -> tuple:
        """``(OC', chunks, 2, 16)`` uint8: the ``+1`` mask, then the ``-1`` mask, of each chunk."""
        return (self.col_blocks * self.tile[1], self.chunks, 2, LANES)


def plan_bitserial_conv2d(data_shape, weight_shape, bits: int, strides=(1, 1), padding=(0, 0, 0, 0),
                          dilation=(1, 1), lanes: str = "auto", acc_dtype: str = "int32") -> BitserialPlan:
    """``data_shape`` is ``(N, C, H, W)`` (``N`` ignored); ``bits``: the data's unsigned width (1..4).  ``lanes``:
    ``"depth"`` (``BitserialPlan``: 128 depth values per register), ``"positions"`` (``PositionLanesPlan``: 16
    positions per register) or ``"auto"``: the layout with the smaller padded work (``padded_work``)."""
    c, h, w = (int(s) for s in list(data_shape)[1:])
    oc, ic, kh, kw = (int(s) for s in weight_shape)
    if ic != c:
        raise ValueError("bitserial: grouped convolutions are not supported; use conv2d_int")
    if acc_dtype not in ("int16", "int32"):
        raise ValueError(f"bitserial: sums as int16 or int32, got {acc_dtype!r}")
    if not 1 <= int(bits) <= MAX_BITS:
        raise ValueError(f"bitserial: activations of 1..{MAX_BITS} bits, got {bits}")
    padding = tuple(int(p) for p in padding)
    padding = padding * 2 if len(padding) == 2 else padding
    plan = BitserialPlan(c, oc, h, w, (kh, kw), tuple(int(s) for s in strides), padding,
                         tuple(int(d) for d in dilation), int(bits), acc_dtype=acc_dtype)
    depth = BitserialPlan(**{**plan.__dict__, "tile": choose_tile(plan.positions, oc, int(bits))})
    if lanes == "depth":
        return depth
    positions = plan_positions(depth)
    if lanes == "positions":
        return positions
    if lanes != "auto":
        raise ValueError(f"bitserial: lanes must be 'auto', 'depth' or 'positions', got {lanes!r}")
    return positions if padded_work(positions) <= padded_work(depth) else depth


def plan_bitserial_dense(a_shape, b_shape, bits: int, acc_dtype: str = "int32") -> BitserialPlan:
    """A matmul ``(M, K) @ (K, N)`` with ternary ``(K, N)`` weights, as a 1x1 conv on a 1x1 map (the depth layout:
    one position per image)."""
    k, n = (int(s) for s in b_shape)
    plan = plan_bitserial_conv2d((1, k, 1, 1), (n, k, 1, 1), bits, lanes="depth", acc_dtype=acc_dtype)
    return BitserialPlan(**{**plan.__dict__, "dense": True})


def padded_work(plan) -> int:
    """``and``/``cnt`` lane-bytes the kernel spends per output channel: positions x depth, both padded as the
    layout pads them."""
    if isinstance(plan, PositionLanesPlan):
        return plan.out_hw[0] * plan.groups * LANES * plan.padded_reduce
    return plan.row_blocks * plan.tile[0] * plan.padded_reduce


def depth_weights(weight: np.ndarray, plan: BitserialPlan) -> np.ndarray:
    """OIHW -> ``(OC', padded_reduce)`` int64 in depth order ``(ky, kx, c)``, zero-padded (numpy)."""
    w = np.asarray(weight).astype(np.int64)
    rows = w.transpose(0, 2, 3, 1).reshape(w.shape[0], -1)
    oc_pad = plan.packed_weight_shape[0]
    return np.pad(rows, ((0, oc_pad - rows.shape[0]), (0, plan.padded_reduce - rows.shape[1])))


def pack_weight_masks(weight: np.ndarray, plan: BitserialPlan) -> np.ndarray:
    """The ``-1`` mask ``M`` and the nonzero mask ``N`` of the constant ternary weights, ``plan.packed_weight_shape``
    uint8: bit ``i`` of byte ``j`` of chunk ``kc`` is depth ``128 kc + 16 i + j`` (numpy, at compile time)."""
    if not is_ternary(weight):
        raise ValueError("bitserial: the weights are not ternary ({-1, 0, 1}); use conv2d_int or paired_int32")
    if isinstance(plan, PositionLanesPlan):
        return _pack_position_masks(weight, plan)
    w = depth_weights(weight, plan).reshape(-1, plan.chunks, 8, LANES)      # (o, kc, i, j)
    shifts = (1 << np.arange(8, dtype=np.int64))[None, None, :, None]
    minus = ((w == -1) * shifts).sum(axis=2)
    nonzero = ((w != 0) * shifts).sum(axis=2)
    return np.stack([minus, nonzero], axis=2).astype(np.uint8)


def weight_offset(weight: np.ndarray, plan: BitserialPlan) -> np.ndarray:
    """``-(2**B - 1) * #{k: w[o, k] = -1}`` per output, int32: what the kernel's ``popcount((X_b ^ M) & N)`` sums
    count beyond ``sum_k w x`` (each -1 weight counts ``1 - x_b`` per plane instead of ``-x_b``); OIHW ``weight``."""
    w = np.asarray(weight).reshape(weight.shape[0], -1)
    return (-((1 << plan.bits) - 1) * (w == -1).sum(axis=1)).astype(np.int32)


def pack_graph_weight(weight: np.ndarray, plan: BitserialPlan) -> np.ndarray:
    """``pack_weight_masks`` of the weight as the graph holds it: OIHW (conv2d) or ``(K, N)`` (dense)."""
    return pack_weight_masks(_oihw(weight, plan), plan)


def graph_weight_offset(weight: np.ndarray, plan: BitserialPlan) -> np.ndarray:
    """``weight_offset`` of the weight as the graph holds it."""
    return weight_offset(_oihw(weight, plan), plan)


def _oihw(weight, plan):
    w = np.asarray(weight)
    return w.T[:, :, None, None] if plan.dense else w


# ----------------------------------------------------------------------------------------- cost model

# Whole-kernel cycles on the A72 = sum of per-unit costs, fitted (least squares) to the eight ternary-layer
# kernels bench/arm_static.py --bitserial measures (trip counts from a qemu run x llvm-mca-19 cycles per block):
# 2.16 cycles per hot-loop pair step (one output's plane against 16 mask bytes: eor, and, cnt, add), 4.27 per
# plane vector packed (8 channel rows into one plane of 16 bytes), 3.32 per output lane (fold, k-block sums,
# offset, write-back).  On those kernels the estimate is within -4%/+8% of the measured cycles except the 1x1
# stride-2 layer (+57%: per-tap packing, 7 of 16 lanes used), which it overestimates.
PAIR_STEP_CYCLES, PLANE_CYCLES, OUTPUT_CYCLES = 2.16, 4.27, 3.32


def work_units(plan: BitserialPlan) -> tuple:
    """``(pair steps, planes packed, output lanes)`` of one image, padding included."""
    oh, _ = plan.out_hw
    if isinstance(plan, PositionLanesPlan):
        outs = plan.col_blocks * plan.tile[1]
        if plan.row_planes:     # each padded input row once: (rows, channel bytes, 16-column vectors, planes)
            (kh, _), (dh, _) = plan.kernel, plan.dilation
            wp = plan.groups * LANES + (plan.kernel[1] - 1) * plan.dilation[1]
            planes = ((oh - 1) * plan.strides[0] + (kh - 1) * dh + 1) * plan.channel_bytes * _ceil_div(wp, LANES) * \
                plan.bits
        else:
            planes = oh * plan.groups * plan.depth_bytes * plan.bits
        return oh * plan.groups * plan.depth_bytes * outs * plan.bits, planes, oh * plan.groups * LANES * outs
    rows, cols = plan.row_blocks * plan.tile[0], plan.col_blocks * plan.tile[1]
    return rows * cols * plan.chunks * plan.bits, rows * plan.chunks * plan.bits * 8, rows * cols * plan.k_blocks


def estimated_cycles(plan: BitserialPlan) -> float:
    """The whole kernel's cycles per image on the A72 (the fitted model above)."""
    steps, planes, outs = work_units(plan)
    return PAIR_STEP_CYCLES * steps + PLANE_CYCLES * planes + OUTPUT_CYCLES * outs


# ----------------------------------------------------------------------------------------- intrinsics

FOLD_BITS = {}    # bits -> registered intrinsic name


def _fold_intrin(bits: int) -> str:
    """``O[0] += sum_{b, j} A[b, j] << b`` over ``bits`` int8x16 accumulators (|lane| <= 8 * 15): ``saddlp``
    per plane into int16x8, Horner ``shl``/``add .8h`` over the planes (|lane| <= 2 * 120 * 15 fits int16), then
    one ``saddlv``: ``2 B`` + ``B - 1`` ops per output and int8 block."""
    if bits in FOLD_BITS:
        return FOLD_BITS[bits]

    @T.prim_func(s_tir=True)
    def desc(a: T.handle, o: T.handle) -> None:
        A = T.match_buffer(a, (bits, 16), "int8", offset_factor=1, scope="local")
        O = T.match_buffer(o, (1,), "int32", offset_factor=1)
        with T.sblock("root"):
            T.reads(O[0:1], A[0:bits, 0:16])
            T.writes(O[0:1])
            for b, j in T.grid(T.int64(bits), T.int64(16)):
                with T.sblock("fold"):
                    vb, vj = T.axis.remap("RR", [b, j])
                    # as the kernel's int64-indexed fold block reads (te.create_prim_func(..., "int64"))
                    O[0] = T.Cast("int32", T.Cast("int64", O[0]) + (T.Cast("int64", T.Cast("int32", A[vb, vj])) << vb))

    @T.prim_func(s_tir=True)
    def impl(a: T.handle, o: T.handle) -> None:
        A = T.match_buffer(a, (bits, 16), "int8", offset_factor=1, scope="local")
        O = T.match_buffer(o, (1,), "int32", offset_factor=1)
        with T.sblock("root"):
            T.reads(O[0:1], A[0:bits, 0:16])
            T.writes(O[0:1])
            # saddlp: pairs of int8 lanes -> int16x8 per plane; Horner in int16 (t = 2 t + plane b); saddlv
            acc = T.call_llvm_pure_intrin(T.llvm_lookup_intrinsic_id("llvm.aarch64.neon.saddlp.v8i16.v16i8"),
                                          A.vload([bits - 1, 0], "int8x16"), dtype="int16x8")
            for b in T.unroll(bits - 1):
                acc = T.shift_left(acc, T.Broadcast(T.int16(1), 8)) + T.call_llvm_pure_intrin(
                    T.llvm_lookup_intrinsic_id("llvm.aarch64.neon.saddlp.v8i16.v16i8"),
                    A.vload([bits - 2 - b, 0], "int8x16"), dtype="int16x8")
            O[0] = O[0] + T.call_llvm_pure_intrin(
                T.llvm_lookup_intrinsic_id("llvm.aarch64.neon.saddlv.i32.v8i16"), acc, dtype="int32")

    name = f"tvm_fxp.neon_bitserial_fold_{bits}x16_i8i32"
    try:
        TensorIntrin.register(name, desc, impl)
    except Exception:  # noqa: BLE001 -- already registered (module reloaded)
        pass
    FOLD_BITS[bits] = name
    return name


# ----------------------------------------------------------------------------------------- compute

def bitserial_compute(data: te.Tensor, masks: te.Tensor, plan: BitserialPlan):
    r, cb = plan.tile
    nb, pb_n, ob_n, ko_n, steps = plan.bits, plan.row_blocks, plan.col_blocks, plan.k_blocks, plan.steps
    n = data.shape[0]
    (kh, kw), (sh, sw), (dh, dw) = plan.kernel, plan.strides, plan.dilation
    pt, pl, _, _ = plan.padding
    oh, ow = plan.out_hw
    cc, ntaps = plan.channels, kh * kw
    ppad = pb_n * r
    hp = max(plan.height + plan.padding[0] + plan.padding[2], ((ppad - 1) // ow) * sh + (kh - 1) * dh + 1)
    wp = plan.width + plan.padding[1] + plan.padding[3]
    zero = tirx.const(0, "uint8")

    def inside(y, x):
        return tirx.all(y >= pt, y < plan.height + pt, x >= pl, x < plan.width + pl)

    at = _data_at(data, plan)
    nhwc = te.compute((n, hp, wp, cc), lambda b, y, x, ch: tirx.if_then_else(
        inside(y, x), at(b, ch, y - pt, x - pl), zero), name="data_nhwc")
    taps = _ceil_div(plan.padded_reduce, cc)

    def gather(b, p, t, ch):
        ty, tx = tirx.min(t, ntaps - 1) // kw, tirx.min(t, ntaps - 1) % kw
        return tirx.if_then_else(t < ntaps, nhwc[b, (p // ow) * sh + ty * dh, (p % ow) * sw + tx * dw, ch], zero)
    col = te.compute((n, ppad, taps, cc), gather, name="data_col")

    def col_at(b, p, k):
        return col[b, p, k // cc, k % cc]

    one = tirx.const(1, "uint8")

    def plane(b, p, bit, kc, j):
        # Horner over the 8 depth rows, top row first: v = (v << 1) | ((x_i >> bit) & 1), which LLVM selects as
        # ushr + sli (shift left and insert): 2 ops per row and plane instead of 4
        v = None
        for i in reversed(range(8)):
            t = (col_at(b, p, kc * CHUNK + i * LANES + j) >> bit.astype("uint8")) & one
            v = t if v is None else (v << one) | t
        return v
    planes = te.compute((n, ppad, nb, plan.chunks, LANES), plane, name="planes")

    ki = te.reduce_axis((0, steps), "ki")

    def step(b, pb, ob, ko, pi, oi, bit, j):
        kc = ko * steps + ki
        x = planes[b, pb * r + pi, bit, kc, j]
        return te.sum(tirx.popcount((x ^ masks[ob * cb + oi, kc, 0, j]) & masks[ob * cb + oi, kc, 1, j])
                      .astype("int8"), axis=ki)
    acc = te.compute((n, pb_n, ob_n, ko_n, r, cb, nb, LANES), step, name="bitserial")
    rb, rj = te.reduce_axis((0, nb), "rb"), te.reduce_axis((0, LANES), "rj")
    fold = te.compute((n, pb_n, ob_n, ko_n, r, cb), lambda b, pb, ob, ko, pi, oi: te.sum(
        acc[b, pb, ob, ko, pi, oi, rb, rj].astype("int32") << rb.astype("int32"), axis=[rb, rj]), name="fold")
    rk = te.reduce_axis((0, ko_n), "rk")
    if plan.dense:
        return te.compute((n, plan.out_channels), lambda b, o: te.sum(fold[b, 0, o // cb, rk, 0, o % cb], axis=rk),
                          name="unpack")

    def value(b, o, y, x):
        p = y * ow + x
        return te.sum(fold[b, p // r, o // cb, rk, p % r, o % cb], axis=rk)
    return te.compute((n, plan.out_channels, oh, ow), value, name="unpack")


def _data_at(data: te.Tensor, plan: BitserialPlan):
    """``(b, c, y, x) -> data``: NCHW, or the ``(M, K)`` rows of a dense layer (``y = x = 0``)."""
    if plan.dense:
        return lambda b, c, y, x: data[b, c]
    return lambda b, c, y, x: data[b, c, y, x]


def finish_compute(unpack: te.Tensor, offset: te.Tensor, plan: BitserialPlan, epilogue=None, params=()) -> te.Tensor:
    """Each sum plus its output's ``weight_offset`` (the exact int32 ``sum_k w x``), as the graph's accumulator
    (``plan.acc_dtype``), then the ``epilogue`` (``epilogue.Epilogue``: cluster multiplier, bias, requantize, as the
    graph computes them): one elementwise stage, a row at a time after that row's sums (``_schedule_finish``)."""
    def f(*idx):
        v = unpack(*idx) + offset[idx[1]]
        if plan.acc_dtype != "int32":
            v = v.astype(plan.acc_dtype)
        return v if epilogue is None else epilogue.apply(v, idx[1], params)
    return te.compute(unpack.shape, f, name="finish")


def _schedule_finish(sch, plan: BitserialPlan) -> None:
    fin = sch.get_sblock("finish")
    loops = sch.get_loops(fin)
    sch.compute_at(sch.get_sblock("unpack"), loops[0] if plan.dense else loops[2], preserve_unit_loops=True)
    vw = 1 if plan.dense else _vector_width(plan.out_hw[1])
    if vw >= 4:
        _, xi = sch.split(sch.get_loops(fin)[-1], [None, vw])
        sch.vectorize(xi)


def _vector_width(cc: int) -> int:
    for v in (16, 8, 4, 2):
        if cc % v == 0:
            return v
    return 1


def schedule_bitserial(func, plan: BitserialPlan, neon: bool = True):
    """Block the ``R x C`` (positions, outputs) tile with all bit planes' int8 accumulators in registers, the
    ``ki`` chunk loop innermost-but-one, lanes vectorized; ``neon`` tensorizes the fold (x86: desc loops)."""
    sch = Schedule(func)
    blk = sch.get_sblock("bitserial")
    b, pb, ob, ko, pi, oi, bit, j, ki = sch.get_loops(blk)
    sch.reorder(b, pb, ob, ko, ki, pi, oi, bit, j)
    sch.set_scope(blk, 0, "local")
    fold = sch.get_sblock("fold")
    sch.reverse_compute_at(fold, ko, preserve_unit_loops=True)   # loops of extent 1 (one bit, one k-block) kept
    planes = sch.get_sblock("planes")
    sch.compute_at(planes, pb, preserve_unit_loops=True)
    col = sch.get_sblock("data_col")
    cc = plan.channels
    sch.transform_layout(col, ("write", 0), lambda n_, p, t, ch: (n_, p, t * cc + ch))
    # the gather stays a stage of its own (all positions of the batch): compute_at under the kernel's loops maps
    # the planes' flat depth range back onto (tap, channel) too narrowly when the channels do not divide it
    # (129 channels: 127 computed; TVM 0.27's region inference), which would leave depth values unwritten
    nhwc = sch.get_sblock("data_nhwc")
    sch.compute_at(nhwc, sch.get_loops(col)[0])
    vw = _vector_width(cc)
    if vw > 1:
        *_, lane = sch.get_loops(col)
        _, lane = sch.split(lane, [None, vw])
        sch.vectorize(lane)
    *_, pbit, pkc, pj = sch.get_loops(planes)
    sch.reorder(pkc, pbit, pj)          # the 8 rows of a chunk loaded once for all planes
    sch.vectorize(pj)
    sch.unroll(pbit)
    sch.vectorize(j)
    init = sch.decompose_reduction(blk, ki)
    sch.unroll(bit)
    sch.unroll(oi)
    sch.unroll(pi)
    *_, ipi, ioi, ibit, ij = sch.get_loops(init)
    sch.vectorize(ij)
    sch.unroll(ibit)
    sch.unroll(ioi)
    sch.unroll(ipi)
    *_, fpi, foi, fb, fj = sch.get_loops(fold)
    sch.decompose_reduction(fold, fb)
    if neon:
        sch.tensorize(fb, _fold_intrin(plan.bits))
    sch.unroll(foi)
    sch.unroll(fpi)
    _schedule_finish(sch, plan)
    return sch.mod["main"]


def bitserial_primfunc(plan: BitserialPlan, batch=1, neon: bool = True, epilogue=None):
    """The kernel PrimFunc ``(data uint8 NCHW or (M, K), masks, offset, [*epilogue constants,] out)``: ``out``
    holds the sums (``plan.acc_dtype``), or the ``epilogue``'s result; ``batch`` an int or None (symbolic).
    ``masks``/``offset``: ``pack_weight_masks``/``weight_offset`` of the weights."""
    if batch is None:
        batch = tirx.Var("n", "int64")
    shape = (batch, plan.channels) if plan.dense else (batch, plan.channels, plan.height, plan.width)
    data = te.placeholder(shape, "uint8", name="data")
    masks = te.placeholder(plan.packed_weight_shape, "uint8", name="weight_masks")
    offset = te.placeholder((plan.out_channels,), "int32", name="weight_offset")
    params = const_placeholders(epilogue)
    if isinstance(plan, PositionLanesPlan):
        out = finish_compute(positions_compute(data, masks, plan), offset, plan, epilogue, params)
        return schedule_positions(te.create_prim_func([data, masks, offset, *params, out], "int64"), plan)
    out = finish_compute(bitserial_compute(data, masks, plan), offset, plan, epilogue, params)
    return schedule_bitserial(te.create_prim_func([data, masks, offset, *params, out], "int64"), plan, neon)


def bitserial_primfuncs(plan: BitserialPlan, batch=None, epilogue=None) -> tuple:
    """``(weight pack, weight offset, kernel)`` as ``conv2d_int.conv2d_primfuncs``: the pack and the offset are numpy
    (``pack_graph_weight``, ``graph_weight_offset``, run at compile time on the constant ternary weight), the kernel
    ``bitserial_primfunc``."""
    return ((lambda w: pack_graph_weight(w, plan)), (lambda w: graph_weight_offset(w, plan)),
            bitserial_primfunc(plan, batch, True, epilogue))


# ----------------------------------------------------------------------------------------- positions in lanes

STEP_BITS = 8              # depth values per mask byte (positions layout)


@dataclass(frozen=True)
class PositionLanesPlan(BitserialPlan):
    """The layout for layers with many positions: the 16 byte lanes hold 16 output positions of one output row
    (the row padded to whole groups of 16), one byte holds 8 channels of one tap (depth ``(ky, kx, c)``, the
    channels padded to a multiple of 8), and an
    output's ``+1`` / ``-1`` masks are one byte each per 8 depth values, broadcast to the lanes (``ld1r``/
    ``dup``).  The depth pads to 8 channels per tap only (the depth-lanes layout pads it to 128), and each lane is
    one position's sum: no horizontal fold.  ``tile[1]``: outputs per register block."""

    @property
    def channel_bytes(self) -> int:
        return _ceil_div(self.channels, STEP_BITS)

    @property
    def used_bytes(self) -> int:
        """Depth bytes ``(ky, kx, 8 channels)``: the channels pad to a multiple of 8 at each tap."""
        kh, kw = self.kernel
        return kh * kw * self.channel_bytes

    @property
    def used_units(self) -> int:
        return self.used_bytes

    unit_values = STEP_BITS

    @property
    def depth_bytes(self) -> int:
        return self.chunks

    @property
    def groups(self) -> int:
        """Groups of 16 positions per output row."""
        return _ceil_div(self.out_hw[1], LANES)

    @property
    def packed_weight_shape(self) -> tuple:
        """``(OC', depth_bytes, 2, 16)`` uint8: the ``+1`` and ``-1`` mask bytes, each repeated over the 16 lanes
        at compile time (a plain 16-byte load on the A72's load pipe; ``ld1r`` would take an ASIMD pipe slot)."""
        return (self.col_blocks * self.tile[1], self.depth_bytes, 2, LANES)

    @property
    def lanes(self) -> str:
        return "positions"

    @property
    def row_planes(self) -> bool:
        """Stride 1 along the rows: bit planes packed once per input row (``positions_compute``), not per tap."""
        return self.strides[1] == 1

    @property
    def lane_efficiency(self) -> float:
        return self.out_hw[1] / (self.groups * LANES)


def _positions_tile(cols: int, bits: int) -> int:
    """Outputs per block: ``C*B`` int8 accumulators + ``B`` planes + ``2C`` broadcast masks <= 30 registers; the
    fewest padded outputs first, then the largest block, counting one that leaves fewer than 4 registers for the
    ``eor``/``and`` temporaries as 1.5 outputs smaller (at 30, LLVM spilled and rotated the accumulators through
    30 ``mov``s per step in some layers: 24->24 14x14 at C = 4 128.1k cycles, C = 3 105.2k; 16->16 28x28 199k
    either way, 32->32 14x14 C = 4 157.9k, C = 3 162.8k)."""
    best = None
    for c in range(1, min(cols, 8) + 1):
        need = c * bits + bits + 2 * c + 2
        if need > REGISTERS:
            continue
        key = (-_ceil_div(cols, c) * c, c - (1.5 if need > REGISTERS - 4 else 0))
        if best is None or key > best[0]:
            best = (key, c)
    return best[1]


def plan_positions(plan: BitserialPlan) -> PositionLanesPlan:
    return PositionLanesPlan(**{**plan.__dict__, "tile": (LANES, _positions_tile(plan.out_channels, plan.bits))})


def _pack_position_masks(weight: np.ndarray, plan: PositionLanesPlan) -> np.ndarray:
    w = np.asarray(weight).astype(np.int64).transpose(0, 2, 3, 1)            # (ky, kx, c) depth order
    w = np.pad(w, ((0, 0), (0, 0), (0, 0), (0, plan.channel_bytes * STEP_BITS - w.shape[3]))).reshape(w.shape[0], -1)
    oc_pad = plan.packed_weight_shape[0]
    w = np.pad(w, ((0, oc_pad - w.shape[0]), (0, plan.padded_reduce - w.shape[1]))).reshape(oc_pad, -1, 8)
    shifts = (1 << np.arange(8, dtype=np.int64))[None, None, :]
    m = np.stack([((w == -1) * shifts).sum(axis=2), ((w != 0) * shifts).sum(axis=2)], axis=2).astype(np.uint8)
    return np.ascontiguousarray(np.repeat(m[..., None], LANES, axis=3))


def positions_compute(data: te.Tensor, masks: te.Tensor, plan: PositionLanesPlan):
    nb, steps, ko_n, gn = plan.bits, plan.steps, plan.k_blocks, plan.groups
    cb = plan.tile[1]
    ob_n = plan.col_blocks
    n = data.shape[0]
    (kh, kw), (sh, sw), (dh, dw) = plan.kernel, plan.strides, plan.dilation
    pt, pl, _, _ = plan.padding
    oh, ow = plan.out_hw
    hp = (oh - 1) * sh + (kh - 1) * dh + 1
    wp = (gn * LANES - 1) * sw + (kw - 1) * dw + 1
    if plan.row_planes:
        wp = _ceil_div(wp, LANES) * LANES          # whole 16-byte vectors per packed row
    zero, one = tirx.const(0, "uint8"), tirx.const(1, "uint8")
    at = _data_at(data, plan)
    dpad = te.compute((n, plan.channels, hp, wp), lambda b, c, y, x: tirx.if_then_else(
        tirx.all(y >= pt, y < plan.height + pt, x >= pl, x < plan.width + pl),
        at(b, c, tirx.min(tirx.max(y - pt, 0), plan.height - 1), tirx.min(tirx.max(x - pl, 0), plan.width - 1)),
        zero), name="data_pad")
    cbn, used = plan.channel_bytes, plan.used_bytes

    def value_at(b, oy, g, kb, i, lane):
        # depth byte kb = (tap, 8 channels): one division per byte, the 8 rows a fixed channel stride apart
        kk = tirx.min(kb, used - 1)
        t, c = kk // cbn, (kk % cbn) * STEP_BITS + i
        v = dpad[b, tirx.min(c, plan.channels - 1), oy * sh + (t // kw) * dh, (g * LANES + lane) * sw + (t % kw) * dw]
        ok = []
        if plan.depth_bytes != used:
            ok.append(kb < used)
        if plan.channels % STEP_BITS:
            ok.append(c < plan.channels)
        return tirx.if_then_else(tirx.all(*ok), v, zero) if ok else v

    def plane(b, oy, g, bit, kb, lane):
        v = None
        for i in reversed(range(8)):
            t = (value_at(b, oy, g, kb, i, lane) >> bit.astype("uint8")) & one
            v = t if v is None else (v << one) | t
        return v
    if plan.row_planes:
        # stride 1: each input row is packed once per image -- a byte = 8 channels at one column -- and the hot loop
        # reads tap (ky, kx) of positions g*16 .. g*16+15 as the 16 bytes at column g*16 + kx of input row oy + ky
        # (an unaligned load): a 3x3 layer packs each value once instead of once per tap.  Padded channels and
        # depth bytes read real (clamped) data: their mask bits are 0.
        def row_plane(b, y, cbyte, bit, x):
            v = None
            for i in reversed(range(8)):
                c = tirx.min(cbyte * STEP_BITS + i, plan.channels - 1)
                t = (dpad[b, c, y, x] >> bit.astype("uint8")) & one
                v = t if v is None else (v << one) | t
            return v
        rows = te.compute((n, hp, cbn, nb, wp), row_plane, name="planes")

        def plane_at(b, oy, g, bit, kb, lane):
            kk = tirx.min(kb, used - 1)
            t = kk // cbn
            return rows[b, oy * sh + (t // kw) * dh, kk % cbn, bit, g * LANES + lane + (t % kw) * dw]
    else:
        planes = te.compute((n, oh, gn, nb, plan.depth_bytes, LANES), plane, name="planes")

        def plane_at(b, oy, g, bit, kb, lane):
            return planes[b, oy, g, bit, kb, lane]
    ki = te.reduce_axis((0, steps), "ki")

    def step(b, oy, g, ob, ko, oi, bit, lane):
        kb = ko * steps + ki
        x = plane_at(b, oy, g, bit, kb, lane)
        return te.sum(tirx.popcount((x ^ masks[ob * cb + oi, kb, 0, lane]) & masks[ob * cb + oi, kb, 1, lane])
                      .astype("int8"), axis=ki)
    acc = te.compute((n, oh, gn, ob_n, ko_n, cb, nb, LANES), step, name="bitserial")
    rb = te.reduce_axis((0, nb), "rb")
    # |sum_b 2^b acc_b| <= 15 * 8 * 15 = 1800: int16
    fold = te.compute((n, oh, gn, ob_n, ko_n, cb, LANES), lambda b, oy, g, ob, ko, oi, lane: te.sum(
        acc[b, oy, g, ob, ko, oi, rb, lane].astype("int16") << rb.astype("int16"), axis=rb), name="fold")
    rk = te.reduce_axis((0, ko_n), "rk")
    return te.compute((n, plan.out_channels, oh, ow), lambda b, o, y, x: te.sum(
        fold[b, y, x // LANES, o // cb, rk, o % cb, x % LANES].astype("int32"), axis=rk), name="unpack")


def schedule_positions(func, plan: PositionLanesPlan):
    sch = Schedule(func)
    blk = sch.get_sblock("bitserial")
    b, oy, g, ob, ko, oi, bit, lane, ki = sch.get_loops(blk)
    sch.reorder(b, oy, g, ob, ko, ki, oi, bit, lane)
    sch.set_scope(blk, 0, "local")
    fold = sch.get_sblock("fold")
    sch.reverse_compute_at(fold, ko, preserve_unit_loops=True)   # loops of extent 1 (one bit, one k-block) kept
    planes = sch.get_sblock("planes")
    if plan.row_planes:     # once per image, all of it (under ``b`` only the read columns: a predicate per vector):
        # (row, channel byte, 16 columns) loads the 8 channel rows once for all planes
        *_, py, pcb, pbit, px = sch.get_loops(planes)
        pxo, pxi = sch.split(px, [None, LANES])
        sch.reorder(py, pcb, pxo, pbit, pxi)
        sch.vectorize(pxi)
        sch.unroll(pbit)
    else:
        sch.compute_at(planes, g, preserve_unit_loops=True)
        *_, pbit, pkb, plane_ = sch.get_loops(planes)
        sch.reorder(pkb, pbit, plane_)
        sch.vectorize(plane_)
        sch.unroll(pbit)
    pad = sch.get_sblock("data_pad")
    sch.compute_at(pad, sch.get_loops(planes)[0] if plan.row_planes else b)
    if plan.row_planes:
        _, pxi = sch.split(sch.get_loops(pad)[-1], [None, LANES])
        sch.vectorize(pxi)
    sch.vectorize(lane)
    init = sch.decompose_reduction(blk, ki)
    sch.unroll(bit)
    sch.unroll(oi)
    *_, ioi, ibit, ilane = sch.get_loops(init)
    sch.vectorize(ilane)
    sch.unroll(ibit)
    sch.unroll(ioi)
    *_, foi, flane, fb = sch.get_loops(fold)
    sch.reorder(fb, flane)
    sch.vectorize(flane)
    finit = sch.decompose_reduction(fold, fb)
    sch.unroll(fb)
    sch.vectorize(sch.get_loops(finit)[-1])
    sch.unroll(foi)
    _schedule_finish(sch, plan)
    # unpack: the k-block sums of a row, a vector of positions at a time (int16 lanes widened, added)
    vw = _vector_width(plan.out_hw[1])
    if vw >= 4:         # (2-lane vectors measured slower than LLVM's scalar code: 32->32 14x14 0.820 -> 0.856)
        unpack = sch.get_sblock("unpack")
        *_, ux, urk = sch.get_loops(unpack)
        uxo, uxi = sch.split(ux, [None, vw])
        sch.reorder(urk, uxo, uxi)
        sch.vectorize(uxi)
        uinit = sch.decompose_reduction(unpack, urk)
        sch.vectorize(sch.get_loops(uinit)[-1])
    return sch.mod["main"]
