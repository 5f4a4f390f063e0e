"""The int32 kernel on ARMv8.0 NEON: the gemmlowp/ruy int8 kernel (``AccumTwoWithin16Bits``) in TIR.

It keeps int32 accumulators and still issues one 8-lane multiply per cycle, by pairing two products in 16 bits
(``intrin_arm.PAIRED_INT32``: ``smull .8h`` + ``smlal2 .8h``, then ``sadalp .4s``).  Exact when no int16 pair
sum can wrap: ``pair_sums_fit_int16`` proves it from the constant weights (ruy requires weights in [-127, 127];
the exact condition is weaker: no int16 lane with two -128 weights).  The legalization (``legalize.py``, and
``fuse.py`` with the requantize epilogue applied in the unpacking) runs it for the aarch64 build's int32 layers
where that proof holds and ``preferred`` (measured) says it beats the widening ``smlal .4s`` kernel of
``conv2d_int``/``dense_int``; ``bench/arm_static.py`` also measures our int16 kernels against it.

GEMM form, as in ruy: each accumulator register holds ONE output (position ``p``, channel ``o``) as four
int32 partial sums over depth; an ``R x C`` register block (``R`` positions, ``C`` channels: ``R*C``
accumulators + ``R + C`` operand registers + 2 temporaries <= 32) shares every 16-byte load over ``C`` (data)
or ``R`` (weights) multiplies; after the reduction the four lanes of four positions' accumulators become one
vector of four sums (``intrin_arm.HSUM_4x4``: three ``addp``, as ruy's write-back), stored to an ``(N, OC,
positions)`` buffer that the vectorized unpack copies to NCHW (dense: one ``addv`` per output).

Depth order (what one 16-byte step reads):

- ``"nhwc"`` (conv2d with >= 16 input channels, and its 1x1 case): the input is repacked once to padded NHWC
  with the channels padded to a multiple of 16; depth = ``(ky, kx, 16 channels)``, so every step reads 16
  contiguous bytes of one input pixel and no im2col buffer is built;
- ``"im2col"`` (conv2d whose channels are not a multiple of 16, e.g. a first layer, and dense): the input
  is copied once to padded NHWC, then each block of ``R`` positions gathers its ``(ky, kx, c)`` depth (``C``
  contiguous bytes per tap, vectorized), with the fewest zero taps that make it a multiple of 16 (dense: the
  row itself, zero-padded).

uint8 data runs as ``x - 128`` (int8) and ``128 * sum(w)`` (int32) is added back per channel, as in
``conv2d_int``.  The kernel's PrimFunc takes ``(data, packed_weight, [offset,] out)``; ``out`` is int32 NCHW
(conv2d) or ``(M, N)`` (dense).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from tvm import te, tirx
from tvm.s_tir import Schedule

from . import intrin_arm
from .common import GemmGeometry, ceil_div as _ceil_div
from .epilogue import const_placeholders

DEPTH = intrin_arm.DEPTH
REGISTERS = 32


def choose_tile(rows: int, cols: int, row_multiple: int = 1) -> tuple:
    """``(R, C)`` within the register file: least padded work first (the multiply pipe is the bottleneck, a padded
    lane costs as much as a real one), then most MACs per loaded register ``R*C/(R+C)``; ``R`` a multiple of
    ``row_multiple`` (conv2d: 4, for the ``addp`` write-back of four positions)."""
    best = None
    for r in range(row_multiple, max(row_multiple, min(rows, 16)) + 1, row_multiple):
        for c in range(1, min(cols, 16) + 1):
            if r * c + r + c + 2 > REGISTERS:
                continue
            padded = _ceil_div(rows, r) * r * _ceil_div(cols, c) * c
            key = (-padded, r * c / (r + c), r)
            if best is None or key > best[0]:
                best = (key, r, c)
    return best[1], best[2]


@dataclass(frozen=True)
class PairedPlan(GemmGeometry):
    """A conv2d (NCHW/OIHW, groups 1) or dense layer as a ``rows x depth x cols`` GEMM."""

    kind: str                 # "conv2d" | "dense"
    data_dtype: str
    channels: int             # C (dense: K)
    out_channels: int         # OC (dense: N)
    height: int = 1
    width: int = 1
    kernel: tuple = (1, 1)
    strides: tuple = (1, 1)
    padding: tuple = (0, 0, 0, 0)
    dilation: tuple = (1, 1)
    rows: int = 1             # dense: M (0: symbolic, one row per block)
    tile: tuple = (1, 1)      # (R, C)

    # what the legalization and the reports read of any kernel plan (``conv2d_int.Conv2dPlan``, ``DensePlan``)
    acc_dtype = "int32"
    weight_dtype = "int8"
    offset_dtype = "int32"
    layout = "paired"

    @property
    def depth_order(self) -> str:
        return "nhwc" if self.kind == "conv2d" and self.channels % DEPTH == 0 else "im2col"

    @property
    def positions(self) -> int:
        return self.rows if self.kind == "dense" else super().positions

    @property
    def padded_channels(self) -> int:
        return _ceil_div(self.channels, DEPTH) * DEPTH

    @property
    def taps(self) -> int:
        """im2col conv2d: ``KH*KW`` window taps plus the fewest zero taps making ``taps * C`` a multiple of 16."""
        kh, kw = self.kernel
        t = kh * kw
        while (t * self.channels) % DEPTH:
            t += 1
        return t

    @property
    def padded_reduce(self) -> int:
        kh, kw = self.kernel
        if self.depth_order == "nhwc":
            return kh * kw * self.padded_channels
        if self.kind == "conv2d":
            return self.taps * self.channels
        return _ceil_div(self.reduce, DEPTH) * DEPTH

    @property
    def packed_weight_shape(self) -> tuple:
        return (self.col_blocks * self.tile[1], self.padded_reduce)

    @property
    def offset_data(self) -> bool:
        return self.data_dtype == "uint8"


def plan_paired_conv2d(data_shape, weight_shape, data_dtype: str, strides=(1, 1), padding=(0, 0, 0, 0),
                       dilation=(1, 1)) -> PairedPlan:
    """``data_shape`` is ``(N, C, H, W)``, ``N`` ignored (may be symbolic)."""
    c, h, w = (int(s) for s in list(data_shape)[1:])
    oc, ic, kh, kw = (int(s) for s in weight_shape)
    if ic != c:
        raise ValueError("paired_int32: grouped convolutions are not a GEMM; use conv2d_int's int32 kernel")
    padding = tuple(int(p) for p in padding)
    padding = padding * 2 if len(padding) == 2 else padding
    plan = PairedPlan("conv2d", data_dtype, c, oc, h, w, (kh, kw), tuple(strides), padding, tuple(dilation))
    return PairedPlan(**{**plan.__dict__, "tile": choose_tile(plan.positions, oc, row_multiple=4)})


def plan_paired_dense(a_shape, b_shape, data_dtype: str) -> PairedPlan:
    """``(M, K) @ (K, N)``; a symbolic ``M`` (not an int) gets ``rows=0`` and one row per register block."""
    m = a_shape[0]
    m = int(m.value) if isinstance(m, tirx.IntImm) else (int(m) if isinstance(m, (int, np.integer)) else 0)
    k, n = int(a_shape[1]), int(b_shape[1])
    tile = choose_tile(m, n) if m else (1, choose_tile(1, n)[1])
    return PairedPlan("dense", data_dtype, k, n, rows=m, tile=tile)


def kernel_operands_ok(weight: np.ndarray) -> bool:
    """ruy's condition for pairing two products in int16: no weight is -128 (sufficient, not necessary:
    ``pair_sums_fit_int16`` is the exact test for a given weight and depth order)."""
    return bool(np.all(weight.astype(np.int64) > -128))


MIN_CHANNELS = 4
"""conv2d below this many input channels (1-3: grayscale/RGB stems) keeps the widening kernel: the paired GEMM
pads their 9-27 depth values to 16-32 and gathers them per position (see ``preferred``)."""


def preferred(plan: PairedPlan) -> bool:
    """Whether this layer runs faster paired than with ``conv2d_int``'s widening ``smlal .4s`` kernel (whole
    kernels, Cortex-A72 model: ``bench/arm_static.py``'s ``int32_path``)."""
    return plan.kind == "dense" or plan.channels >= MIN_CHANNELS


STORED_RANGE = (-128, 127)
"""What the kernel multiplies by the weights: int8 data, or uint8 data as ``x - 128``; either way [-128, 127]."""


# Whole-kernel cycles on the A72, fitted (least squares) to this kernel's eight ternary-layer shapes measured by
# bench/arm_static.py --bitserial (qemu trip counts x llvm-mca-19 cycles per block): 0.152 cycles per padded MAC
# (6.6 MACs/cycle over the whole kernel: the 8/cycle hot loop plus gathers and write-back) and 0.082 per output;
# within -5%/+15% of those measurements.  Used to weigh it against the bit-serial kernel (legalize.py).
CYCLES_PER_MAC, CYCLES_PER_OUTPUT = 0.152, 0.082


def estimated_cycles(plan: PairedPlan) -> float:
    """The whole kernel's cycles for one image (dense: one row) on the A72 (the fitted model above)."""
    positions = plan.positions if plan.kind == "conv2d" else 1
    outputs = _ceil_div(positions, plan.tile[0]) * plan.tile[0] * plan.col_blocks * plan.tile[1]
    return CYCLES_PER_MAC * outputs * plan.padded_reduce + CYCLES_PER_OUTPUT * outputs


def depth_weights(weight: np.ndarray, plan: PairedPlan) -> np.ndarray:
    """The weights (OIHW, dense ``(K, N)``) as ``(OC, padded_reduce)`` int64 in the kernel's depth order, as
    ``pack_weight`` lays them out (zero padding included), in numpy."""
    w = np.asarray(weight).astype(np.int64)
    if plan.kind == "dense":
        rows = w.T
    else:
        oc, c, kh, kw = w.shape
        taps = w.transpose(0, 2, 3, 1)                        # (OC, KH, KW, C): depth (ky, kx, c)
        if plan.depth_order == "nhwc":
            taps = np.pad(taps, ((0, 0), (0, 0), (0, 0), (0, plan.padded_channels - c)))
        rows = taps.reshape(oc, -1)
    return np.pad(rows, ((0, 0), (0, plan.padded_reduce - rows.shape[1])))


def pair_sums_fit_int16(weight: np.ndarray, plan: PairedPlan, data_range: tuple = STORED_RANGE) -> bool:
    """The kernel's proof obligation: every int16 lane of ``smull`` + ``smlal2`` holds ``a[k] w[k] + a[k+8]
    w[k+8]`` (``k`` mod 16 < 8 in the depth order), and the sum must not wrap.  Given the constant weights and
    the data's stored range ``[lo, hi]``, the lane's extremes are ``sum max(lo w, hi w)`` and ``sum min(lo w,
    hi w)`` over its two products; True when every lane of every output stays in [-32768, 32767].  With data
    in [-128, 127] this fails exactly where both weights of a pair are -128 (``(-128)(-128) * 2 = 32768``)."""
    lo, hi = (int(v) for v in data_range)
    w = depth_weights(weight, plan)
    pairs = w.reshape(w.shape[0], -1, 2, 8)
    top = np.maximum(lo * pairs, hi * pairs).sum(axis=2)
    bottom = np.minimum(lo * pairs, hi * pairs).sum(axis=2)
    return bool(top.max(initial=0) <= 32767 and bottom.min(initial=0) >= -32768)


# ----------------------------------------------------------------------------------------- compute

def _stored(value, plan):
    if not plan.offset_data:
        return value
    return (value.astype("int16") - tirx.const(128, "int16")).astype("int8")


def pack_weight(weight: te.Tensor, plan: PairedPlan) -> te.Tensor:
    """OIHW (dense: ``(K, N)``) int8 -> ``(OC', K')`` in the kernel's depth order, zero-padded."""
    oc, zero = plan.out_channels, tirx.const(0, "int8")
    kh, kw = plan.kernel
    if plan.kind == "dense":
        return te.compute(plan.packed_weight_shape, lambda o, k: tirx.if_then_else(
            tirx.all(o < oc, k < plan.reduce), weight[tirx.min(k, plan.reduce - 1), tirx.min(o, oc - 1)], zero),
            name="weight_pack")
    cp = plan.padded_channels

    def f(o, k):
        if plan.depth_order == "nhwc":
            ky, kx, c = k // (kw * cp), (k // cp) % kw, k % cp
            ok = tirx.all(o < oc, c < plan.channels)
        else:
            t, c = k // plan.channels, k % plan.channels
            ky, kx = t // kw, t % kw
            ok = tirx.all(o < oc, t < kh * kw)
        return tirx.if_then_else(ok, weight[tirx.min(o, oc - 1), tirx.min(c, plan.channels - 1),
                                            tirx.min(ky, kh - 1), kx], zero)
    return te.compute(plan.packed_weight_shape, f, name="weight_pack")


def weight_offset(weight: te.Tensor, plan: PairedPlan) -> te.Tensor:
    """``128 * sum(w[o])`` (int32) per output, for uint8 data run as ``x - 128``."""
    if plan.kind == "dense":
        rk = te.reduce_axis((0, plan.reduce), "rk")
        total = te.compute((plan.out_channels,), lambda o: te.sum(weight[rk, o].astype("int32"), axis=rk),
                           name="weight_sum")
    else:
        _, ic, kh, kw = weight.shape
        ri, ry, rx = te.reduce_axis((0, ic), "ri"), te.reduce_axis((0, kh), "ry"), te.reduce_axis((0, kw), "rx")
        total = te.compute((plan.out_channels,), lambda o: te.sum(
            weight[o, ri, ry, rx].astype("int32"), axis=[ri, ry, rx]), name="weight_sum")
    return te.compute((plan.out_channels,), lambda o: total[o] * tirx.const(128, "int32"), name="weight_offset")


def paired_compute(data: te.Tensor, packed: te.Tensor, plan: PairedPlan, offset: te.Tensor | None = None,
                   epilogue=None, params=()):
    """The kernel's stages; with an ``epilogue`` (``epilogue.Epilogue``, constants in ``params``) the unpacking
    applies it to each int32 sum (+ offset) and the result has the epilogue's dtype (``fuse.py``)."""
    r, c = plan.tile
    pb_n, ob_n = plan.row_blocks, plan.col_blocks

    def finish(v, o):
        v = v if offset is None else v + offset[o]
        if epilogue is None:
            return v
        return epilogue.apply(v.asobject() if hasattr(v, "asobject") else v, o, params)
    zero = _stored(tirx.const(0, data.dtype), plan)
    h2, e2 = te.reduce_axis((0, 2), "h"), te.reduce_axis((0, 2), "e")
    if plan.kind == "dense":
        kp, rows = plan.padded_reduce, plan.rows or data.shape[0]
        if not plan.rows:        # symbolic M: one row per block
            pb_n = rows
        col = te.compute((pb_n * r, kp), lambda p, k: tirx.if_then_else(
            tirx.all(k < plan.reduce, p < rows), _stored(data[tirx.min(p, rows - 1),
                                                              tirx.min(k, plan.reduce - 1)], plan), zero),
            name="data_pack")
        rko = te.reduce_axis((0, kp // DEPTH), "rko")
        acc = te.compute((pb_n, ob_n, r, c, 4), lambda pb, ob, pi, oi, l: te.sum(
            col[pb * r + pi, rko * DEPTH + h2 * 8 + l * 2 + e2].astype("int32")
            * packed[ob * c + oi, rko * DEPTH + h2 * 8 + l * 2 + e2].astype("int32"), axis=[rko, h2, e2]),
            name="paired")
        rl = te.reduce_axis((0, 4), "rl")
        hsum = te.compute((pb_n, ob_n, r, c), lambda pb, ob, pi, oi: te.sum(acc[pb, ob, pi, oi, rl], axis=rl),
                          name="hsum")

        return te.compute((rows, plan.out_channels), lambda i, j: finish(hsum[i // r, j // c, i % r, j % c], j),
                          name="unpack")

    n = data.shape[0]
    (kh, kw), (sh, sw), (dh, dw) = plan.kernel, plan.strides, plan.dilation
    pt, pl, _, _ = plan.padding
    oh, ow = plan.out_hw
    ppad = pb_n * r
    hp = max(plan.height + plan.padding[0] + plan.padding[2], ((ppad - 1) // ow) * sh + (kh - 1) * dh + 1)
    wp = plan.width + plan.padding[1] + plan.padding[3]

    def inside(y, x):
        return tirx.all(y >= pt, y < plan.height + pt, x >= pl, x < plan.width + pl)

    if plan.depth_order == "nhwc":
        cp = plan.padded_channels
        dpad = te.compute((n, hp, wp, cp), lambda b, y, x, ch: tirx.if_then_else(
            tirx.all(inside(y, x), ch < plan.channels),
            _stored(data[b, tirx.min(ch, plan.channels - 1), y - pt, x - pl], plan),
            tirx.if_then_else(ch < plan.channels, zero, tirx.const(0, "int8"))), name="data_pack")
        rky, rkx = te.reduce_axis((0, kh), "rky"), te.reduce_axis((0, kw), "rkx")
        rcb = te.reduce_axis((0, cp // DEPTH), "rcb")

        def a_at(b, p, l):
            return dpad[b, (p // ow) * sh + rky * dh, (p % ow) * sw + rkx * dw, rcb * DEPTH + h2 * 8 + l * 2 + e2]

        def w_at(o, l):
            return packed[o, (rky * kw + rkx) * cp + rcb * DEPTH + h2 * 8 + l * 2 + e2]
        axes = [rky, rkx, rcb, h2, e2]
    else:
        # im2col in (ky, kx, c) order from a padded NHWC copy: each tap copies C contiguous bytes
        kp, cc, ntaps = plan.padded_reduce, plan.channels, kh * kw
        nhwc = te.compute((n, hp, wp, cc), lambda b, y, x, ch: tirx.if_then_else(
            inside(y, x), _stored(data[b, ch, y - pt, x - pl], plan), zero), name="data_nhwc")

        def gather(b, p, t, ch):
            ty, tx = tirx.min(t, ntaps - 1) // kw, tirx.min(t, ntaps - 1) % kw
            return tirx.if_then_else(t < ntaps, nhwc[b, (p // ow) * sh + ty * dh, (p % ow) * sw + tx * dw, ch],
                                     tirx.const(0, "int8"))
        dpad = te.compute((n, ppad, plan.taps, cc), gather, name="data_pack")
        rko = te.reduce_axis((0, kp // DEPTH), "rko")

        def a_at(b, p, l):
            k = rko * DEPTH + h2 * 8 + l * 2 + e2
            return dpad[b, p, k // cc, k % cc]

        def w_at(o, l):
            return packed[o, rko * DEPTH + h2 * 8 + l * 2 + e2]
        axes = [rko, h2, e2]
    acc = te.compute((n, pb_n, ob_n, c, r, 4), lambda b, pb, ob, oi, pi, l: te.sum(
        a_at(b, pb * r + pi, l).astype("int32") * w_at(ob * c + oi, l).astype("int32"), axis=axes), name="paired")

    rl = te.reduce_axis((0, 4), "rl")
    hsum = te.compute((n, pb_n, ob_n, c, r), lambda b, pb, ob, oi, pi: te.sum(acc[b, pb, ob, oi, pi, rl], axis=rl),
                      name="hsum")

    def value(b, o, y, x):
        p = y * ow + x
        return finish(hsum[b, p // r, o // c, o % c, p % r], o)
    return te.compute((n, plan.out_channels, oh, ow), value, name="unpack")


def schedule_paired(func, plan: PairedPlan, neon: bool = True):
    """Block, reorder and (``neon``) tensorize with ``PAIRED_INT32``; without ``neon`` (x86 hosts, for the
    bit-exact tests of the schedule) the desc's loops stay plain."""
    sch = Schedule(func)
    blk = sch.get_sblock("paired")
    loops = sch.get_loops(blk)
    if plan.kind == "dense":
        pb, ob, pi, oi, l, *red = loops
        outer = []
    else:
        b, pb, ob, oi, pi, l, *red = loops
        outer = [b]
    *depth, h, e = red
    sch.reorder(*outer, pb, ob, *depth, pi, oi, l, h, e)
    sch.set_scope(blk, 0, "local")
    hsum = sch.get_sblock("hsum")
    sch.reverse_compute_at(hsum, ob)
    pack = sch.get_sblock("data_pack")
    if plan.kind == "conv2d" and plan.depth_order == "nhwc":
        sch.compute_at(pack, outer[0])
        _, lane = sch.split(sch.get_loops(pack)[-1], [None, DEPTH])   # 16-byte vectors (not one of C bytes)
        sch.vectorize(lane)
    elif plan.kind == "conv2d":
        cc = plan.channels      # the GEMM reads the (P, taps, C) gather as one (P, taps * C) row per position
        sch.transform_layout(pack, ("write", 0), lambda b, p, t, ch: (b, p, t * cc + ch))
        sch.compute_at(pack, pb)
        if cc <= DEPTH:
            sch.vectorize(sch.get_loops(pack)[-1])
        nhwc = sch.get_sblock("data_nhwc")
        sch.compute_at(nhwc, outer[0])
    init = sch.decompose_reduction(blk, depth[0])
    if neon:
        sch.tensorize(l, intrin_arm.PAIRED_INT32)
    # depth loops stay rolled: unrolling kx x channel blocks made LLVM spill the 16-20 accumulators (llvm-mca
    # A72, 32->32 3x3: 6.1 MACs/cycle unrolled vs 7.1 rolled)
    sch.unroll(pi)
    sch.unroll(oi)
    *_, ii, io, il = sch.get_loops(init)
    sch.vectorize(il)
    sch.unroll(io)
    sch.unroll(ii)
    if plan.kind == "dense":
        *_, hi, ho, hl = sch.get_loops(hsum)
        sch.unroll(ho)
        sch.unroll(hi)
    else:       # four positions' accumulators of one channel -> one vector of four sums (addp tree)
        r, c = plan.tile     # stored as (N, OC', P'): the unpack reads positions contiguously
        sch.transform_layout(hsum, ("write", 0), lambda b, pb, ob, oi, pi: (b, ob * c + oi, pb * r + pi))
        *_, ho, hp, hl = sch.get_loops(hsum)
        hpo, hpi = sch.split(hp, [None, 4])
        sch.unroll(ho)
        sch.unroll(hpo)
        hinit = sch.decompose_reduction(hsum, hpi)
        sch.vectorize(sch.get_loops(hinit)[-1])
        if neon:
            sch.tensorize(hpi, intrin_arm.HSUM_4x4)
        unpack = sch.get_sblock("unpack")
        if plan.out_hw[1] <= 16:            # wider rows are left to LLVM's loop vectorizer
            sch.vectorize(sch.get_loops(unpack)[-1])
    return sch.mod["main"]


def paired_primfuncs(plan: PairedPlan, batch=1, neon: bool = True, epilogue=None) -> tuple:
    """``(weight_pack, weight_offset or None, kernel)`` PrimFuncs, as ``conv2d_int.conv2d_primfuncs``: the
    kernel takes ``(data, packed_weight, [offset,] [*epilogue constants,] out)``.  ``batch``: an int or None
    (symbolic; dense: the rows, static when ``plan.rows``)."""
    if batch is None:
        batch = tirx.Var("n", "int64")
    if plan.kind == "dense":
        weight = te.placeholder((plan.channels, plan.out_channels), "int8", name="weight")
        rows = plan.rows or batch
        data = te.placeholder((rows, plan.channels), plan.data_dtype, name="data")
    else:
        kh, kw = plan.kernel
        weight = te.placeholder((plan.out_channels, plan.channels, kh, kw), "int8", name="weight")
        data = te.placeholder((batch, plan.channels, plan.height, plan.width), plan.data_dtype, name="data")
    pack_func = te.create_prim_func([weight, pack_weight(weight, plan)], "int64")
    packed = te.placeholder(plan.packed_weight_shape, "int8", name="weight_packed")
    params, offset, offset_func = [data, packed], None, None
    if plan.offset_data:
        offset_func = te.create_prim_func([weight, weight_offset(weight, plan)], "int64")
        offset = te.placeholder((plan.out_channels,), "int32", name="weight_offset")
        params.append(offset)
    consts = const_placeholders(epilogue)
    out = paired_compute(data, packed, plan, offset, epilogue, consts)
    return pack_func, offset_func, schedule_paired(te.create_prim_func([*params, *consts, out], "int64"), plan,
                                                   neon)
