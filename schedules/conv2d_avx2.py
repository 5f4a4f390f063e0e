"""conv2d on x86 AVX2 without VNNI: ``vpmaddubsw`` pair sums, accumulated in int16 where the plan proves it.

FBGEMM's acc16 idea (``fbgemm/*Acc16*``: 16-bit accumulation of ``vpmaddubsw`` results on AVX2), made safe by
the plan's proof instead of by splitting out outlier weights.  ``vpmaddubsw`` multiplies 32 u8 x s8 pairs and
adds adjacent products into 16 int16 lanes with signed saturation.  A layer realized with int16 accumulators
has a proven L1 bound ``max|x| * sum|w| < 2**15`` on every partial sum of every output -- any pair sum and any
running sum included -- so neither the pair sums saturate nor the int16 adds wrap: the result is exact.

Two layouts of ``Conv2dPlan`` (uint8 data, int8 weights, groups 1; ``plan_conv2d`` picks them on AVX2 targets
without AVX-512):

- ``"avx2_acc16"`` (int16 accumulators): the VNNI layout below (4 input channels per 32-bit word, 8 output
  channels per ymm); one step = ``vpbroadcastd`` of 4 input channels (a plain load), ``vpmaddubsw`` against
  8 output channels x 4 input channels, giving each channel two 16-bit pair sums (input channels 0-1 and 2-3)
  in adjacent lanes, ``vpaddw`` into the int16 accumulator (``ACC16``): 2 instructions per 32 MACs, one on
  a multiply port.  The two partial sums of a channel (each a partial sum under the proven bound) are added
  once, at write-back.  (``vpbroadcastw`` of an input pair against 16 channels would need a shuffle-port uop
  per broadcast: llvm-mca haswell bound it on port 5.)
- ``"avx2_madd"`` (int32 accumulators, the int32 path to compare with): the pre-VNNI oneDNN form,
  ``vpmaddubsw`` then ``vpmaddwd`` with ones (the widening step acc16 saves) then ``vpaddd``, on the VNNI
  layout ``(N, C4, H', W', 4)`` x ``(OCB, C4, KH, KW, 8, 4)`` (``MADD32``).  Its pair sums saturate unless
  they are proven below 2**15 too, so it is only chosen on request (``layout="avx2_madd"``, or inside
  ``prefer_madd()``): the bench runs it on the same int16-safe plan, where it is exact.

Everything else (padding, register blocking over ``R`` positions -- here ``R`` columns of one output row,
``row_width`` --, the fused epilogue at write-back) is the VNNI kernel's (``conv2d_vnni``).
"""

from __future__ import annotations


from tvm import te, tirx
from tvm.s_tir import Schedule, TensorIntrin
from tvm.script import tirx as T

from .common import ThreadFlag
from .common import has_block as _has_block
from .epilogue import const_placeholders

LAYOUTS = {"avx2_acc16": (8, 4, "int16"), "avx2_madd": (8, 4, "int32")}    # layout -> (lanes, group, acc)
ACC16 = "tvm_fxp.avx2_pmaddubsw_8x2x2_i16"
MADD32 = "tvm_fxp.avx2_pmaddubsw_pmaddwd_8x4_i32"
MAX_BLOCK = {"avx2_acc16": 8, "avx2_madd": 8}
"""Positions blocked in ymm accumulators: ``R`` columns of one output row (``row_width``), so a block reads its
inputs through one base pointer (``R`` consecutive flattened positions each needed their own -- ``p // OW``,
``p % OW`` are not affine in the block --, and past ~8 of them LLVM spilled pointers and accumulators: llvm-mca
haswell, 32->32 3x3 acc16 inner loop 21.5 MACs/cycle at R=11, 27.1 at R=7).  Rows of 14 and 28 columns take
R = 7; R = 14 (14 of the 16 ymm registers as accumulators) spills: acc16 1.16x the cycles of R = 7.  Measured on
the reference models' seven AVX2 conv shapes (this host, one thread, min of 21 interleaved runs, load ~5, kernel
sums): row blocks vs flattened blocks of <= 8 positions acc16 0.972, madd 0.978; acc16 / madd 0.746 (flattened
0.750)."""

_madd = ThreadFlag()


def prefer_madd():
    """Within this block (this thread), int32 conv2d on AVX2 targets uses ``"avx2_madd"`` (bench baseline)."""
    return _madd.set()


def madd_preferred() -> bool:
    return bool(_madd)


@T.prim_func(s_tir=True)
def _acc16_desc(a: T.handle, b: T.handle, c: T.handle) -> None:
    A = T.match_buffer(a, (4,), "uint8", offset_factor=1)
    B = T.match_buffer(b, (8, 2, 2), "int8", offset_factor=1)
    C = T.match_buffer(c, (8, 2), "int16", offset_factor=1, scope="local")
    with T.sblock("root"):
        T.reads(C[0:8, 0:2], A[0:4], B[0:8, 0:2, 0:2])
        T.writes(C[0:8, 0:2])
        for i, h, k in T.grid(8, 2, 2):
            with T.sblock("update"):
                vi, vh, vk = T.axis.remap("SSR", [i, h, k])
                C[vi, vh] = C[vi, vh] + T.cast(A[vh * 2 + vk], "int16") * T.cast(B[vi, vh, vk], "int16")


@T.prim_func(s_tir=True)
def _acc16_impl(a: T.handle, b: T.handle, c: T.handle) -> None:
    A = T.match_buffer(a, (4,), "uint8", offset_factor=1)
    B = T.match_buffer(b, (8, 2, 2), "int8", offset_factor=1)
    C = T.match_buffer(c, (8, 2), "int16", offset_factor=1, scope="local")
    with T.sblock("root"):
        T.reads(C[0:8, 0:2], A[0:4], B[0:8, 0:2, 0:2])
        T.writes(C[0:8, 0:2])
        # vpbroadcastd (a load on every x86 since Haswell, unlike vpbroadcastw): byte j = A[j % 4], so 16-bit
        # lane 2i + h of vpmaddubsw sums the input pair (2h, 2h+1) of output channel i
        quad = T.reinterpret(A.vload([0], "uint8x4"), dtype="int32")
        C[0, T.ramp(T.int32(0), 1, 16)] = C.vload([0, 0], "int16x16") + T.call_llvm_pure_intrin(
            T.llvm_lookup_intrinsic_id("llvm.x86.avx2.pmadd.ub.sw"),
            T.reinterpret(T.broadcast(quad, 8), dtype="int8x32"), B.vload([0, 0, 0], dtype="int8x32"),
            dtype="int16x16")


@T.prim_func(s_tir=True)
def _madd_desc(a: T.handle, b: T.handle, c: T.handle) -> None:
    A = T.match_buffer(a, (4,), "uint8", offset_factor=1)
    B = T.match_buffer(b, (8, 4), "int8", offset_factor=1)
    C = T.match_buffer(c, (8,), "int32", offset_factor=1, scope="local")
    with T.sblock("root"):
        T.reads(C[0:8], A[0:4], B[0:8, 0:4])
        T.writes(C[0:8])
        for i, k in T.grid(8, 4):
            with T.sblock("update"):
                vi, vk = T.axis.remap("SR", [i, k])
                C[vi] = C[vi] + T.cast(A[vk], "int32") * T.cast(B[vi, vk], "int32")


@T.prim_func(s_tir=True)
def _madd_impl(a: T.handle, b: T.handle, c: T.handle) -> None:
    A = T.match_buffer(a, (4,), "uint8", offset_factor=1)
    B = T.match_buffer(b, (8, 4), "int8", offset_factor=1)
    C = T.match_buffer(c, (8,), "int32", offset_factor=1, scope="local")
    with T.sblock("root"):
        T.reads(C[0:8], A[0:4], B[0:8, 0:4])
        T.writes(C[0:8])
        quad = T.reinterpret(A.vload([0], "uint8x4"), dtype="int32")
        pairs = T.call_llvm_pure_intrin(
            T.llvm_lookup_intrinsic_id("llvm.x86.avx2.pmadd.ub.sw"),
            T.reinterpret(T.broadcast(quad, 8), dtype="int8x32"), B.vload([0, 0], dtype="int8x32"),
            dtype="int16x16")
        C[T.ramp(T.int32(0), 1, 8)] = C.vload([0], "int32x8") + T.call_llvm_pure_intrin(
            T.llvm_lookup_intrinsic_id("llvm.x86.avx2.pmadd.wd"), pairs, T.broadcast(T.int16(1), 16),
            dtype="int32x8")


for _name, _desc, _impl in ((ACC16, _acc16_desc, _acc16_impl), (MADD32, _madd_desc, _madd_impl)):
    try:
        TensorIntrin.register(_name, _desc, _impl)
    except Exception:  # noqa: BLE001 -- already registered (module reloaded)
        pass


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def packed_weight_shape(plan) -> tuple:
    """``(OCB, C4, KH, KW, 8, 4)`` (madd) or ``(OCB, C4, KH, KW, 8, 2, 2)`` (acc16: the same bytes, the 4 input
    channels seen as 2 pairs, one 16-bit partial sum per pair)."""
    lanes, group, _ = LAYOUTS[plan.layout]
    kh, kw = plan.kernel
    tail = (2, 2) if plan.layout == "avx2_acc16" else (group,)
    return (_ceil_div(plan.out_channels, lanes), _ceil_div(plan.channels, group), kh, kw, lanes, *tail)


def pack_weight(weight: te.Tensor, plan) -> te.Tensor:
    lanes, group, _ = LAYOUTS[plan.layout]
    oc, c, zero = plan.out_channels, plan.channels, tirx.const(0, "int8")

    def f(ob, cg, ky, kx, v, *k):
        kk = k[0] * 2 + k[1] if len(k) == 2 else k[0]
        return tirx.if_then_else(tirx.all(ob * lanes + v < oc, cg * group + kk < c),
                                 weight[tirx.min(ob * lanes + v, oc - 1), tirx.min(cg * group + kk, c - 1), ky, kx],
                                 zero)
    return te.compute(packed_weight_shape(plan), f, name="weight_pack")


def row_width(plan) -> int:
    """Output columns per row, padded to whole register blocks: a block is ``R = plan.block`` columns of one
    output row, so its positions' inputs are one base pointer plus constant offsets."""
    return _ceil_div(plan.out_hw[1], plan.block) * plan.block


def conv2d_compute(data, packed, plan, epilogue=None, params=()):
    lanes, group, acc = LAYOUTS[plan.layout]
    n = data.shape[0]
    (kh, kw), (sh, sw), (dh, dw) = plan.kernel, plan.strides, plan.dilation
    pt, pl, pb, pr = plan.padding
    oh, ow = plan.out_hw
    owp = row_width(plan)
    hp = plan.height + pt + pb
    wp = max(plan.width + pl + pr, (owp - 1) * sw + (kw - 1) * dw + 1)
    c, oc = plan.channels, plan.out_channels

    def inside(y, x):
        return tirx.all(y >= pt, y < plan.height + pt, x >= pl, x < plan.width + pl)

    pad = te.compute((n, _ceil_div(c, group), hp, wp, group), lambda b, q, y, x, k: tirx.if_then_else(
        tirx.all(inside(y, x), q * group + k < c), data[b, tirx.min(q * group + k, c - 1), y - pt, x - pl],
        tirx.const(0, "uint8")), name="data_pad")
    rq = te.reduce_axis((0, _ceil_div(c, group)), "rq")
    rky, rkx = te.reduce_axis((0, kh), "rky"), te.reduce_axis((0, kw), "rkx")
    ocb = _ceil_div(oc, lanes)
    if plan.layout == "avx2_acc16":     # two 16-bit partial sums per output channel (input pairs 0-1, 2-3)
        rk = te.reduce_axis((0, 2), "rk")
        part = te.compute(
            (n, ocb, oh, owp, lanes, 2),
            lambda b, ob, y, x, v, h: te.sum(
                pad[b, rq, y * sh + rky * dh, x * sw + rkx * dw, h * 2 + rk].astype(acc)
                * packed[ob, rq, rky, rkx, v, h, rk].astype(acc), axis=[rq, rky, rkx, rk]),
            name="conv")
        # both fit int16 (each is a partial sum of the proven bound), so their int16 sum is the exact total
        rh = te.reduce_axis((0, 2), "rh")
        conv = te.compute((n, ocb, oh, owp, lanes),
                          lambda b, ob, y, x, v: te.sum(part[b, ob, y, x, v, rh], axis=rh), name="pair_sum")
    else:
        rk = te.reduce_axis((0, group), "rk")
        conv = te.compute(
            (n, ocb, oh, owp, lanes),
            lambda b, ob, y, x, v: te.sum(
                pad[b, rq, y * sh + rky * dh, x * sw + rkx * dw, rk].astype(acc)
                * packed[ob, rq, rky, rkx, v, rk].astype(acc), axis=[rq, rky, rkx, rk]),
            name="conv")

    def finish(value):
        return value.astype(plan.acc_dtype)

    if epilogue is not None:
        epi = te.compute(conv.shape, lambda b, ob, y, x, v: epilogue.apply(
            finish(conv[b, ob, y, x, v]), tirx.min(ob * lanes + v, oc - 1), params), name="epilogue")
        return te.compute((n, oc, oh, ow), lambda b, o, y, x: epi[b, o // lanes, y, x, o % lanes],
                          name="conv_unpack")
    return te.compute((n, oc, oh, ow), lambda b, o, y, x: finish(conv[b, o // lanes, y, x, o % lanes]),
                      name="conv_unpack")


def schedule(func: tirx.PrimFunc, plan) -> tirx.PrimFunc:
    sch = Schedule(func)
    conv = sch.get_sblock("conv")
    acc16 = plan.layout == "avx2_acc16"
    if acc16:
        n, ob, y, x, v, h, rq, rky, rkx, rk = sch.get_loops(conv)
        lanes = [v, h]
    else:
        n, ob, y, x, v, rq, rky, rkx, rk = sch.get_loops(conv)
        lanes = [v]
    po, pi = sch.split(x, [None, plan.block])
    sch.reorder(n, ob, y, po, rq, rky, rkx, pi, *lanes, rk)
    accb = sch.cache_write(conv, 0, "local")
    sch.reverse_compute_at(accb, po)
    if acc16:       # the pair of partial sums is added as the registers are written back
        psum = sch.get_sblock("pair_sum")
        sch.reverse_compute_at(psum, po)
        *_, pv, ph = sch.get_loops(psum)
        sch.reorder(ph, pv)
        sch.vectorize(pv)
        sch.unroll(ph)
        sch.decompose_reduction(psum, ph)
        if _has_block(sch, "epilogue"):
            epi = sch.get_sblock("epilogue")
            sch.reverse_compute_at(epi, po)
            sch.vectorize(sch.get_loops(epi)[-1])
    elif _has_block(sch, "epilogue"):
        sch.reverse_compute_inline(sch.get_sblock("epilogue"))
    sch.unroll(pi)
    k = len(lanes)
    back = sch.get_loops(accb)
    sch.vectorize(sch.fuse(*back[-k:]) if k > 1 else back[-1])
    sch.unroll(back[-k - 1])
    if plan.kernel[1] <= 7:
        sch.unroll(rkx)
    init = sch.decompose_reduction(conv, rq)
    first = sch.get_loops(init)
    sch.vectorize(sch.fuse(*first[-k:]) if k > 1 else first[-1])
    sch.unroll(first[-k - 1])
    pad = sch.get_sblock("data_pad")
    sch.compute_at(pad, n)
    sch.vectorize(sch.get_loops(pad)[-1])
    sch.tensorize(v, ACC16 if acc16 else MADD32)
    return sch.mod["main"]


def conv2d_primfuncs(plan, batch=None, epilogue=None) -> tuple:
    batch = tirx.Var("n", "int64") if batch is None else batch
    kh, kw = plan.kernel
    weight = te.placeholder((plan.out_channels, plan.channels, kh, kw), "int8", name="weight")
    pack_func = te.create_prim_func([weight, pack_weight(weight, plan)], "int64")
    data = te.placeholder((batch, plan.channels, plan.height, plan.width), "uint8", name="data")
    packed = te.placeholder(packed_weight_shape(plan), "int8", name="weight_packed")
    consts = const_placeholders(epilogue)
    out = conv2d_compute(data, packed, plan, epilogue, consts)
    return pack_func, None, schedule(te.create_prim_func([data, packed, *consts, out], "int64"), plan)
