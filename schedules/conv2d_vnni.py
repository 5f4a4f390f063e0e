"""conv2d on x86 AVX-512 VNNI: ``vpdpbusd`` (u8 x s8, 4 products summed into each int32 lane) per step.

Layout ``"vnni"`` of ``Conv2dPlan`` (chosen by ``plan_conv2d`` for regular convs with int8 weights on targets
with ``avx512vnni``):

- the input is padded and packed to ``(N, C4, H', W', 4)`` uint8 (4 consecutive input channels per 32-bit
  word, zero channels appended); int8 data is shifted to ``x + 128`` (uint8) and ``128 * sum(w)`` is
  subtracted per output channel at the end (``weight_offset``, int32);
- weights are packed to ``(OCB, C4, KH, KW, 16, 4)`` int8 (16 output channels x 4 input channels = one zmm);
- ``conv[n, ob, p, 0:16] += dot4(pad[n, c4, y, x, 0:4], w[ob, c4, ky, kx, 0:16, 0:4])`` is one ``vpdpbusd``
  (``tvm.s_tir.tensor_intrin.x86``'s ``dot_16x4_vnni``, tensorized), register-blocked over ``R`` positions.

Blocked activations (``plan.data_layout`` / ``plan.out_layout`` ``"NCHW16c"``, set by ``layout.py``'s
``BlockLayout`` pass between consecutive integer layers): the data arrives as ``(N, C/16, H, W, 16)`` and is
padded in that layout (a copy, no transpose; skipped for unpadded uint8 1x1 convs, which read it in place), the
4 channels of a ``vpdpbusd`` step being 4 consecutive bytes of a 16-channel block; the output is written as
``(N, OC/16, OH, OW, 16)`` straight from the registers (the block ``R`` divides the positions then, so no
phantom position exists and the unpacking transpose disappears).  Channels past ``C`` are the producer's
padding channels, which the graph pass gives zero weights.

The products and sums are exact in int32 (|u8 * s8| < 2**15, and the layer's proven bound fits int16 or
int32), so the int32 result equals the true sum; it is narrowed to the plan's accumulator dtype, which the
proof says holds it -- the same integers the plain kernels produce.  An ``epilogue`` (``epilogue.Epilogue``)
is applied to the registers at write-back as in ``conv2d_int``.
"""

from __future__ import annotations

from dataclasses import dataclass

from tvm import te, tirx
from tvm.s_tir import Schedule
from tvm.s_tir import TensorIntrin
from tvm.script import tirx as T

from .common import ceil_div as _ceil_div, has_block as _has_block, tile_unpack
from .epilogue import const_placeholders

LANES, GROUP = 16, 4
INTRIN = "tvm_fxp.dot_16x4_vnni_local"


# tvm.s_tir.tensor_intrin.x86's dot_16x4_vnni, with the accumulator in a "local" buffer (registers)
@T.prim_func(s_tir=True)
def _dot_desc(a: T.handle, b: T.handle, c: T.handle) -> None:
    A = T.match_buffer(a, (4,), "uint8", offset_factor=1)
    B = T.match_buffer(b, (16, 4), "int8", offset_factor=1)
    C = T.match_buffer(c, (16,), "int32", offset_factor=1, scope="local")
    with T.sblock("root"):
        T.reads(C[0:16], A[0:4], B[0:16, 0:4])
        T.writes(C[0:16])
        for i in T.serial(0, 16):
            for k in T.serial(0, 4):
                with T.sblock("update"):
                    vi, vk = T.axis.remap("SR", [i, k])
                    C[vi] = C[vi] + T.cast(A[vk], "int32") * T.cast(B[vi, vk], "int32")


@T.prim_func(s_tir=True)
def _dot_vnni(a: T.handle, b: T.handle, c: T.handle) -> None:
    A = T.match_buffer(a, (4,), "uint8", offset_factor=1)
    B = T.match_buffer(b, (16, 4), "int8", offset_factor=1)
    C = T.match_buffer(c, (16,), "int32", offset_factor=1, scope="local")
    with T.sblock("root"):
        T.reads(C[0:16], A[0:4], B[0:16, 0:4])
        T.writes(C[0:16])
        A_i32 = T.reinterpret(A.vload([0], "uint8x4"), dtype="int32")
        A_u8x64 = T.reinterpret(T.broadcast(A_i32, 16), dtype="uint8x64")
        C[T.ramp(T.int32(0), 1, 16)] = T.call_llvm_pure_intrin(     # LLVM >= 19: (<16 x i32>, <64 x i8>, <64 x i8>)
            T.llvm_lookup_intrinsic_id("llvm.x86.avx512.vpdpbusd.512"),
            C.vload([0], dtype="int32x16"), A_u8x64, B.vload([0, 0], dtype="int8x64"), dtype="int32x16")


try:
    TensorIntrin.register(INTRIN, _dot_desc, _dot_vnni)
except Exception:  # noqa: BLE001 -- already registered (module reloaded)
    pass


def folded_taps(plan) -> int:
    """Kernel columns folded into each 4-byte word: ``KW`` when ``C * KW <= 4`` (a stem: grey 3x3 has 3 taps
    and 1 zero byte per word instead of 1 channel and 3 zero bytes, 3 ``vpdpbusd`` per 16 channels and
    position instead of 9), else 1.  Byte ``k`` of a folded word is channel ``k % C`` of kernel column
    ``k // C``; the reduction over kernel columns then has extent 1."""
    kw = plan.kernel[1]
    return kw if kw > 1 and plan.channels * kw <= GROUP else 1


def weight_parts(plan) -> int:
    """2 for int16 weights: each is split into int8 parts ``w = lo + 256 * hi`` (``lo`` in [-128, 127], ``hi =
    (w - lo) >> 8``, an int8 for every ``w < 32640``: the legalization only plans such weights here), packed
    as two output-channel vectors per 16 channels (``lo`` in block ``2*ob``, ``hi`` in ``2*ob + 1``) and
    combined as ``conv_lo + 256 * conv_hi`` in int32 at write-back (exact: int32 arithmetic is modular and the
    proven sum fits).  1 for int8 weights."""
    return 2 if plan.weight_dtype == "int16" else 1


def packed_weight_shape(plan) -> tuple:
    kh, kw = plan.kernel
    ocb = _ceil_div(plan.out_channels, LANES) * weight_parts(plan)
    if folded_taps(plan) > 1:
        return (ocb, 1, kh, 1, LANES, GROUP)
    return (ocb, _ceil_div(plan.channels, GROUP), kh, kw, LANES, GROUP)


def pack_weight(weight: te.Tensor, plan) -> te.Tensor:
    oc, c, zero = plan.out_channels, plan.channels, tirx.const(0, "int8")
    taps = folded_taps(plan)

    def part(w, ob):    # int8 weights as they are; int16: lo (blocks < OCB) or hi (see weight_parts)
        if weight_parts(plan) == 1:
            return w
        w = w.astype("int32")
        lo = ((w + 128) & 255) - 128
        return tirx.Select(ob % 2 == 0, lo, (w - lo) >> 8).astype("int8")

    def channel(ob, v):
        return (ob // weight_parts(plan)) * LANES + v

    if taps > 1:
        return te.compute(packed_weight_shape(plan), lambda ob, _q, ky, _x, v, k: tirx.if_then_else(
            tirx.all(channel(ob, v) < oc, k < c * taps),
            part(weight[tirx.min(channel(ob, v), oc - 1), k % c, ky, tirx.min(k // c, taps - 1)], ob), zero),
            name="weight_pack")
    return te.compute(packed_weight_shape(plan), lambda ob, c4, ky, kx, v, k: tirx.if_then_else(
        tirx.all(channel(ob, v) < oc, c4 * GROUP + k < c),
        part(weight[tirx.min(channel(ob, v), oc - 1), tirx.min(c4 * GROUP + k, c - 1), ky, kx], ob), zero),
        name="weight_pack")


def weight_offset(weight: te.Tensor, plan) -> te.Tensor:
    """``-128 * sum(w[o])`` (int32) for int8 data, which the kernel runs as ``x + 128``."""
    _, icg, kh, kw = weight.shape
    ri, ry, rx = te.reduce_axis((0, icg), "ri"), te.reduce_axis((0, kh), "ry"), te.reduce_axis((0, kw), "rx")
    total = te.compute((plan.out_channels,), lambda o: te.sum(weight[o, ri, ry, rx].astype("int32"),
                                                               axis=[ri, ry, rx]), name="weight_sum")
    return te.compute((plan.out_channels,), lambda o: total[o] * tirx.const(-128, "int32"), name="weight_offset")


BLOCK = 16      # channels per block of the blocked activation layout NCHW16c


def blocked(layout: str) -> bool:
    return layout == "NCHW16c"


def reads_in_place(plan) -> bool:
    """Blocked uint8 data that needs no padding (1x1-like windows inside the map): the conv reads it in place."""
    return blocked(plan.data_layout) and plan.data_dtype == "uint8" and not any(plan.padding) and \
        plan.padded_hw == (plan.height, plan.width)


def conv2d_compute(data, packed, plan, offset=None, epilogue=None, params=(), tensors=()):
    n = data.shape[0]
    (kh, kw), (sh, sw), (dh, dw) = plan.kernel, plan.strides, plan.dilation
    pt, pl, _, _ = plan.padding
    hp, wp = plan.padded_hw
    oh, ow = plan.out_hw
    c, oc = plan.channels, plan.out_channels
    c4 = _ceil_div(c, GROUP)
    signed = plan.data_dtype == "int8"
    zero = tirx.const(128 if signed else 0, "uint8")

    def stored(value):
        return (value.astype("int16") + tirx.const(128, "int16")).astype("uint8") if signed else value

    def inside(y, x):
        return tirx.all(y >= pt, y < plan.height + pt, x >= pl, x < plan.width + pl)

    taps = folded_taps(plan)
    if blocked(plan.data_layout):
        if c % BLOCK:
            raise ValueError(f"conv2d: blocked data needs channels in blocks of {BLOCK}, got {c}")
        if reads_in_place(plan):
            def tap(b, q, y, x, k):
                return data[b, q // (BLOCK // GROUP), y, x, (q % (BLOCK // GROUP)) * GROUP + k]
        else:
            pad = te.compute((n, c // BLOCK, hp, wp, BLOCK), lambda b, q, y, x, k: tirx.if_then_else(
                inside(y, x), stored(data[b, q, tirx.min(tirx.max(y - pt, 0), plan.height - 1),
                                          tirx.min(tirx.max(x - pl, 0), plan.width - 1), k]), zero),
                name="data_pad")

            def tap(b, q, y, x, k):
                return pad[b, q // (BLOCK // GROUP), y, x, (q % (BLOCK // GROUP)) * GROUP + k]
    elif taps > 1:  # byte k: channel k % c at column x + (k // c) * dw (indices clamped: the lanes load in bounds)
        def folded(b, y, x, k):
            col = x + tirx.min(k // c, taps - 1) * dw
            return tirx.if_then_else(
                tirx.all(inside(y, col), k < c * taps),
                stored(data[b, k % c, tirx.max(tirx.min(y - pt, plan.height - 1), 0),
                            tirx.max(tirx.min(col - pl, plan.width - 1), 0)]), zero)

        c4 = 1
        pad = te.compute((n, 1, hp, wp, GROUP), lambda b, q, y, x, k: folded(b, y, x, k), name="data_pad")

        def tap(b, q, y, x, k):
            return pad[b, q, y, x, k]
    else:
        pad = te.compute((n, c4, hp, wp, GROUP), lambda b, q, y, x, k: tirx.if_then_else(
            tirx.all(inside(y, x), q * GROUP + k < c),
            stored(data[b, tirx.min(q * GROUP + k, c - 1), y - pt, x - pl]), zero), name="data_pad")

        def tap(b, q, y, x, k):
            return pad[b, q, y, x, k]
    rq = te.reduce_axis((0, c4), "rq")
    rky = te.reduce_axis((0, kh), "rky")
    rkx = te.reduce_axis((0, kw // taps), "rkx")
    rk = te.reduce_axis((0, GROUP), "rk")
    ocb, parts = _ceil_div(oc, LANES), weight_parts(plan)
    conv = te.compute(
        (n, ocb * parts, plan.padded_positions, LANES),
        lambda b, ob, p, v: te.sum(
            tap(b, rq, (p // ow) * sh + rky * dh, (p % ow) * sw + rkx * dw, rk).astype("int32")
            * packed[ob, rq, rky, rkx, v, rk].astype("int32"), axis=[rq, rky, rkx, rk]),
        name="conv")

    def summed(b, ob, p, v):      # int16 weights: lo + 256 * hi
        if parts == 1:
            return conv[b, ob, p, v]
        return conv[b, 2 * ob, p, v] + conv[b, 2 * ob + 1, p, v] * tirx.const(256, "int32")

    def finish(value, o):
        if offset is not None:
            value = value + offset[o]
        return value.astype(plan.acc_dtype)

    out_blocked = blocked(plan.out_layout)
    if out_blocked and (oc % LANES or plan.padded_positions != oh * ow):
        raise ValueError(f"conv2d: blocked output needs {LANES}-channel blocks and a block dividing the positions")

    def operand(b, ob, p, v):     # epilogue tensors (a residual add's other side), in the output's layout
        q = tirx.min(p, oh * ow - 1)   # phantom positions (NCHW output) read the last one; they are dropped
        if out_blocked:
            return lambda j: tensors[j][b, ob, q // ow, q % ow, v]
        return lambda j: tensors[j][b, tirx.min(ob * LANES + v, oc - 1), q // ow, q % ow]

    if epilogue is not None:
        source = te.compute((n, ocb, plan.padded_positions, LANES), lambda b, ob, p, v: epilogue.apply(
            finish(summed(b, ob, p, v), tirx.min(ob * LANES + v, oc - 1)), tirx.min(ob * LANES + v, oc - 1),
            params, operand(b, ob, p, v)), name="epilogue")

        def result(b, ob, p, v):
            return source[b, ob, p, v]
    else:
        def result(b, ob, p, v):
            return finish(summed(b, ob, p, v), ob * LANES + v)
    if out_blocked:
        return te.compute((n, oc // LANES, oh, ow, LANES), lambda b, ob, y, x, v: result(b, ob, y * ow + x, v),
                          name="conv_unpack")
    return te.compute((n, oc, oh, ow), lambda b, o, y, x: result(b, o // LANES, y * ow + x, o % LANES),
                      name="conv_unpack")


def channel_blocks(plan, block: int | None = None) -> int:
    """Output-channel vectors per register block of ``block`` (default ``plan.block``) positions: 2 where the
    blocked output's ``R`` (e.g. 7 on 7x7 maps) leaves registers free and the layer has an even number of
    vectors, else 3 where that divides them (48 channels at 7x7: 3 x 7 accumulators; fmnist_resnet's default
    build 1.07x faster, load 2.7) -- each broadcast input word then feeds that many ``vpdpbusd``."""
    block = plan.block if block is None else block
    vectors = _ceil_div(plan.out_channels, LANES)
    if blocked(plan.out_layout) and block <= 8 and weight_parts(plan) == 1:
        for v in (2, 3):
            if vectors % v == 0:
                return v
    return 1


def row_block(plan) -> int:
    """``R`` of a ``rows`` tile: the largest divisor of the output width up to ``VNNI_MAX_BLOCK`` (16)."""
    ow = plan.out_hw[1]
    return max(d for d in range(1, min(ow, 16) + 1) if ow % d == 0)


@dataclass(frozen=True)
class Knobs:
    """The schedule's choices (``apply_schedule``); ``default_knobs(plan)`` is the hand schedule.

    - ``block``: ``R``, output positions per register tile (an int, or MetaSchedule's sampled ``ExprRV``);
      with ``shape="flat"`` it divides the plan's padded positions, with ``"rows"`` the output width;
    - ``vectors``: 16-channel output vectors per register tile (1, 2 or 3; divides the vectors of the layer):
      each broadcast input word feeds that many ``vpdpbusd`` (``vectors x R`` zmm accumulators);
    - ``shape``: ``"flat"``: ``R`` consecutive flattened positions ``p = y*OW + x``; ``"rows"``: the positions
      split into output rows first, ``R`` columns of one row per tile (input addresses affine in the loop
      variables: no division by ``OW`` per position)."""

    block: object
    vectors: int = 1
    shape: str = "flat"


def default_knobs(plan) -> Knobs:
    """Rows of ``row_block(plan)`` positions where that is at least 7 and the (padded) positions are whole
    rows (int8 weights), else ``plan.block`` flat positions; ``channel_blocks`` output vectors.  Rows: no
    division by the width per position (28-wide maps, 14 x 2 tiles per row instead of 16 flat positions:
    fmnist_vgg's default build 1.12x faster, load 2.5); the same loops as flat where ``R`` is the width."""
    r = row_block(plan)
    if r >= 7 and plan.padded_positions % plan.out_hw[1] == 0 and weight_parts(plan) == 1:
        return Knobs(r, channel_blocks(plan, r), "rows")
    return Knobs(plan.block, channel_blocks(plan), "flat")


def schedule(func: tirx.PrimFunc, plan) -> tirx.PrimFunc:
    """The default schedule: ``apply_schedule`` with ``default_knobs(plan)``."""
    sch = Schedule(func)
    apply_schedule(sch, plan, default_knobs(plan))
    return sch.mod["main"]


def apply_schedule(sch: Schedule, plan, knobs: Knobs) -> None:
    """Schedule the kernel in ``sch`` (``conv2d_compute``'s blocks) with ``knobs``.  No primitive changes what a
    block computes: every choice gives the same integers in the plan's accumulator."""
    conv = sch.get_sblock("conv")
    n, ob, p, v, rq, rky, rkx, rk = sch.get_loops(conv)
    if knobs.shape == "rows":
        y, x = sch.split(p, [None, plan.out_hw[1]])
        po, pi = sch.split(x, [None, knobs.block])
        positions = [y, po]
    else:
        po, pi = sch.split(p, [None, knobs.block])
        positions = [po]
    anchor = positions[-1]
    split = weight_parts(plan) == 2
    inner = [pi]
    if split:       # int16 weights: the lo and hi sums of a block side by side (2 x R accumulators)
        ob, part = sch.split(ob, [None, 2])
        sch.reorder(n, ob, *positions, part, rq, rky, rkx, pi, v, rk)
    else:
        if knobs.vectors > 1:
            ob, obi = sch.split(ob, [None, knobs.vectors])
            inner = [obi, pi]
        sch.reorder(n, ob, *positions, rq, rky, rkx, *inner, v, rk)
    acc = sch.cache_write(conv, 0, "local")
    sch.reverse_compute_at(acc, anchor)
    if _has_block(sch, "epilogue"):
        if not split:
            sch.reverse_compute_inline(sch.get_sblock("epilogue"))
        else:       # it reads both sums of the block, right after their write-back (still in L1)
            epi = sch.get_sblock("epilogue")
            sch.reverse_compute_at(epi, anchor)
            sch.vectorize(sch.get_loops(epi)[-1])
    for loop in inner:
        sch.unroll(loop)
    depth = len(inner)
    *_, av = sch.get_loops(acc)
    sch.vectorize(av)
    for loop in sch.get_loops(acc)[-1 - depth:-1]:
        sch.unroll(loop)
    init = sch.decompose_reduction(conv, rq)
    *_, iv = sch.get_loops(init)
    sch.vectorize(iv)
    for loop in sch.get_loops(init)[-1 - depth:-1]:
        sch.unroll(loop)
    if blocked(plan.out_layout):      # the registers go straight to the blocked output: no unpacking pass
        sch.reverse_compute_inline(sch.get_sblock("conv_unpack"))
    if _has_block(sch, "data_pad"):
        pad = sch.get_sblock("data_pad")
        sch.compute_at(pad, n)
        sch.vectorize(sch.get_loops(pad)[-1])
    sch.tensorize(v, INTRIN)
    tile_unpack(sch, LANES)


def conv2d_primfuncs(plan, batch=None, epilogue=None) -> tuple:
    batch = tirx.Var("n", "int64") if batch is None else batch
    kh, kw = plan.kernel
    weight = te.placeholder((plan.out_channels, plan.channels, kh, kw), plan.weight_dtype, name="weight")
    pack_func = te.create_prim_func([weight, pack_weight(weight, plan)], "int64")
    data_shape = (batch, plan.channels // BLOCK, plan.height, plan.width, BLOCK) if blocked(plan.data_layout) \
        else (batch, plan.channels, plan.height, plan.width)
    data = te.placeholder(data_shape, plan.data_dtype, name="data")
    packed = te.placeholder(packed_weight_shape(plan), "int8", name="weight_packed")
    params, offset, offset_func = [data, packed], None, None
    if plan.data_dtype == "int8":
        offset_func = te.create_prim_func([weight, weight_offset(weight, plan)], "int64")
        offset = te.placeholder((plan.out_channels,), "int32", name="weight_offset")
        params.append(offset)
    consts = const_placeholders(epilogue)
    oh, ow = plan.out_hw
    out_shape = (batch, plan.out_channels // LANES, oh, ow, LANES) if blocked(plan.out_layout) \
        else (batch, plan.out_channels, oh, ow)
    tensors = [] if epilogue is None else [te.placeholder(out_shape, str(t.ty.dtype), name=f"epilogue_t{j}")
                                           for j, t in enumerate(epilogue.tensors)]
    out = conv2d_compute(data, packed, plan, offset, epilogue, consts, tensors)
    from .tuned import schedule_kernel   # the tuned schedule when a tuning database is in scope

    func = te.create_prim_func([*params, *consts, *tensors, out], "int64")
    return pack_func, offset_func, schedule_kernel(func, plan, schedule)
