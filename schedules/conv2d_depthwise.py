"""Depthwise int8/uint8 conv2d (one filter per channel, NCHW in and out) for x86 CPUs.

Layouts ``"depthwise_vnni"`` (AVX-512 VNNI + VBMI) and ``"depthwise"`` (any x86 with AVX2) of ``Conv2dPlan``,
chosen by ``plan_conv2d`` on x86 targets for ``groups == C == OC`` with int8 weights.  The ``"groups"``
layout packs 16 channels into a vector and so transposes the NCHW input to ``(C/16, H, W, 16)`` and the
output back, per layer: at 224x224 those transposes cost more than the arithmetic (MobileNetV2's depthwise
convs ran at 3-5 MACs/cycle).  These kernels need no transpose: every channel is an independent plane, and
the vector runs along the output row.

Per image and channel ``c``:

- the plane is copied into a padded buffer whose padding is written once per call (every channel overwrites
  the same interior);
- the output is cut into tiles of one row by ``L`` columns; the last tile of a row starts at ``OW - L`` and
  recomputes a few columns rather than running a scalar tail (the values are the same, stored twice);
- ``"depthwise_vnni"``: per tile and kernel row ``ky``, one 64-byte load of the padded input row, one
  ``vpermb`` that gathers each output column's 4 taps (``x*sw + j*dw``) into its 32-bit lane, and one
  ``vpdpbusd`` with the 4 tap weights broadcast (zero past ``KW``; 5x5 filters take two groups): 64 MACs
  per instruction, 16 output columns a tile, or several whole rows of at most 8 columns (7x7 maps).
  int8 data is stored as ``x + 128`` and ``-128 * sum(w)`` is added back per channel; the int32 sum is
  narrowed to the plan's accumulator dtype, which the plan proved holds it;
- ``"depthwise"``: the plane is split by column phase for strided convs (``pad[s, y, q] = x_pad[c, y,
  q * sw + s]``, so every tap is a contiguous vector load); per tile an ``L``-lane accumulator of the plan's
  dtype sums the ``KH * KW`` taps, each the input widened to the accumulator times the broadcast tap weight
  (int32: LLVM turns ``zext(u8) * sext(i8)`` into ``vpmaddwd``; int16, where proven: ``vpmullw`` +
  ``vpaddw``);
- the fused epilogue (``epilogue.Epilogue``: bias at accumulator scale, rounding shift, saturate, relu/clip)
  is applied to the accumulator lanes as they are stored, the same TIR expression as in the other kernels.

Exactness: every product of an 8-bit input and an int8 weight fits in int16 (``|255 * -128| < 2**15``), so
the int16 product is exact and its widening to int32 is the true product; ``vpdpbusd`` sums 4 such products
into int32 without saturation; int16 sums wrap mod ``2**16`` and are exact whenever the final sum fits,
which is what the plan proved (``conv2d_int``'s wrap argument).

Blocked activations (``plan.data_layout == plan.out_layout == "NCHW16c"``, ``layout.py``): ``(N, C/16, H, W,
16)`` in and out, layout ``"depthwise_vnni"`` with dilation 1 (``_kernel_blocked``).  Per channel block the
``(H, W, 16)`` plane is copied into a padded buffer; per output position and kernel row one 64-byte load holds
4 consecutive input columns x 16 channels, one ``vpermb`` (the same permutation everywhere) turns it into 16
channels x 4 taps, one ``vpdpbusd`` with the block's packed tap weights (``(C/16, KH, KW/4, 64)``) adds them:
48 MACs per instruction for a 3x3 filter, 16 channels a vector, no transposes in or out.

The kernels are written out directly as TIR (``tvm.script``'s IR builder, in the s_tir form with a root
block that Relax's analyses of ``call_tir`` callees expect) rather than scheduled from a TE compute: the
overlapping last tile is no schedule primitive, and without it the row tails would run scalar or need a
copy of the output.  They are not MetaSchedule-tunable (``tuning.py`` never sees them).
"""

from __future__ import annotations

from tvm import te, tirx
from tvm.script.ir_builder import IRBuilder
from tvm.tirx.script.builder import ir as T

from .common import ceil_div, shape64

VECTOR_BYTES = {"x86-avx512": 64, "x86-avx2": 32}
VNNI_LANES, TAPS = 16, 4            # vpdpbusd: 16 int32 lanes, each the sum of 4 u8 x s8 products
PERMB = "llvm.x86.avx512.permvar.qi.512"
DPBUSD = "llvm.x86.avx512.vpdpbusd.512"
CHUNK_OVERHEAD = 4      # per-chunk cost (init, epilogue, store) in lane-equivalents, for ``choose_lanes``


def supports(groups: int, channels: int, out_channels: int, weight_dtype: str, acc_dtype: str, arch: str) -> bool:
    """Whether ``plan_conv2d`` should choose this kernel: depthwise with multiplier 1 on an x86 target."""
    return (groups == channels == out_channels and weight_dtype == "int8" and acc_dtype in ("int16", "int32")
            and arch in VECTOR_BYTES)


def choose_lanes(out_width: int, acc_dtype: str, arch: str) -> int:
    """Columns per chunk: a full vector or half/double of it, whichever computes the fewest (overlapping)
    columns plus a per-chunk overhead; the whole row when it is narrower than that."""
    full = VECTOR_BYTES[arch] // (2 if acc_dtype == "int16" else 4)
    best, best_cost = out_width, None
    for lanes in (full // 2, full, full * 2):
        if lanes > out_width:
            continue
        cost = ceil_div(out_width, lanes) * (lanes + CHUNK_OVERHEAD)
        if best_cost is None or cost < best_cost:
            best, best_cost = lanes, cost
    return best


def vnni_fits(strides, dilation) -> bool:
    """Whether one 64-byte load holds the input of 16 output columns x 4 taps (``vpermb`` selects from it)."""
    return (VNNI_LANES - 1) * strides[1] + (TAPS - 1) * dilation[1] < 64


BLOCK = 16          # channels per block of the NCHW16c layout


def _blocked(plan) -> bool:
    return getattr(plan, "data_layout", "NCHW") == "NCHW16c"


def packed_weight_shape(plan) -> tuple:
    if _blocked(plan):
        kh, kw = plan.kernel
        return (plan.channels // BLOCK, kh, ceil_div(kw, TAPS), BLOCK * TAPS)
    if plan.layout == "depthwise_vnni":
        kh, kw = plan.kernel
        return (plan.channels, kh, ceil_div(kw, TAPS), TAPS)
    return (plan.channels, *plan.kernel)


def pack_weight(weight: te.Tensor, plan) -> te.Tensor:
    if _blocked(plan):          # byte 4c + j of (block, ky, g): tap 4g + j of channel 16 * block + c
        kw, zero = plan.kernel[1], tirx.const(0, "int8")
        return te.compute(packed_weight_shape(plan), lambda cb, ky, g, i: tirx.if_then_else(
            g * TAPS + i % TAPS < kw, weight[cb * BLOCK + i // TAPS, 0, ky, tirx.min(g * TAPS + i % TAPS, kw - 1)],
            zero), name="weight_pack")
    if plan.layout == "depthwise_vnni":
        kw, zero = plan.kernel[1], tirx.const(0, "int8")
        return te.compute(packed_weight_shape(plan), lambda c, ky, g, j: tirx.if_then_else(
            g * TAPS + j < kw, weight[c, 0, ky, tirx.min(g * TAPS + j, kw - 1)], zero), name="weight_pack")
    return te.compute(packed_weight_shape(plan), lambda c, ky, kx: weight[c, 0, ky, kx], name="weight_pack")


def plane_shape(plan) -> tuple:
    """``(phases, rows, columns per phase)`` of the padded per-channel buffer."""
    (kh, kw), (sh, sw), (dh, dw) = plan.kernel, plan.strides, plan.dilation
    oh, ow = plan.out_hw
    return sw, (oh - 1) * sh + (kh - 1) * dh + 1, ow + ((kw - 1) * dw) // sw


def _kernel(plan, batch, out_dtype: str, epilogue=None) -> tirx.PrimFunc:
    c_, h, w = plan.channels, plan.height, plan.width
    (kh, kw), (sh, sw), (dh, dw) = plan.kernel, plan.strides, plan.dilation
    pt, pl, _, _ = plan.padding
    oh, ow = plan.out_hw
    phases, rows, cols = plane_shape(plan)
    lanes, acc = plan.lanes, plan.acc_dtype
    chunks = ceil_div(ow, lanes)
    dt = plan.data_dtype
    with IRBuilder() as ib:
        with T.prim_func(s_tir=True):
            T.func_name("conv2d_depthwise")
            T.func_attr({"tirx.noalias": True})
            data = T.arg("data", T.buffer(shape64(batch, c_, h, w), dt))
            weight = T.arg("weight_packed", T.buffer(packed_weight_shape(plan), "int8"))
            consts = [] if epilogue is None else [T.arg(f"epilogue_c{j}", T.buffer((k.size,), str(k.dtype)))
                                                  for j, k in enumerate(epilogue.consts)]
            out = T.arg("out", T.buffer(shape64(batch, c_, oh, ow), out_dtype))
            with T.sblock("root"):   # s_tir form: Relax's analyses of call_tir'd PrimFuncs expect it
                pad = T.sblock_alloc_buffer((phases, rows, cols), dt, scope="global")
                accum = T.sblock_alloc_buffer((lanes,), acc, scope="local")
                fill(pad, rows, cols, 0, dt, plan.strides[1])
                with T.serial(0, batch) as b:
                    with T.serial(0, c_) as c:
                        copy_plane(pad, data, b, c, plan, rows, cols)
                        with T.serial(0, oh) as y:
                            with T.serial(0, chunks) as xo:
                                x0 = tirx.min(xo * lanes, ow - lanes) if chunks > 1 else tirx.const(0, "int32")
                                with T.vectorized(0, lanes) as v:
                                    T.buffer_store(accum, tirx.const(0, acc), [v])
                                for ky in range(kh):
                                    for kx in range(kw):
                                        tap = weight[c, ky, kx].astype(acc)
                                        phase, shift = (kx * dw) % sw, (kx * dw) // sw
                                        with T.vectorized(0, lanes) as v:
                                            x_in = pad[phase, y * sh + ky * dh, x0 + v + shift].astype(acc)
                                            T.buffer_store(accum, accum[v] + x_in * tap, [v])
                                with T.vectorized(0, lanes) as v:
                                    value = accum[v]
                                    if epilogue is not None:
                                        value = epilogue.apply(value, c, consts)
                                    T.buffer_store(out, value, [b, c, y, x0 + v])
    return ib.get()


def fill(pad, rows: int, cols: int, value: int, dtype: str, phases: int) -> None:
    """Set all of ``pad`` to ``value`` -- once per call: ``copy_plane`` overwrites the same interior for
    every channel, so the padding stays."""
    with T.serial(0, phases) as s:
        with T.serial(0, rows) as y:
            with T.serial(0, cols) as q:
                T.buffer_store(pad, tirx.const(value, dtype), [s, y, q])


def copy_plane(pad, data, b, c, plan, rows: int, cols: int) -> None:
    """Copy channel ``c`` of image ``b`` into the interior of ``pad``, phase-split for strided windows:
    ``pad[s, y, q] = x_pad[c, y, q * sw + s]``.  ``plan`` has ``height``, ``width``, ``strides``, ``padding``."""
    sw = plan.strides[1]
    pt, pl, _, _ = plan.padding
    for s in range(sw):
        # input columns ix = q * sw + s - pl inside [0, W) with q in [0, cols)
        q_lo = max(0, ceil_div(pl - s, sw))
        q_hi = min(cols, (plan.width - 1 - s + pl) // sw + 1)
        if q_hi <= q_lo:
            continue
        with T.serial(0, max(0, min(plan.height, rows - pt))) as iy:
            with T.serial(q_lo, q_hi) as q:
                T.buffer_store(pad, data[b, c, iy, q * sw + s - pl], [s, iy + pt, q])


def _kernel_vnni(plan, batch, out_dtype: str, epilogue=None) -> tirx.PrimFunc:
    """Layout ``"depthwise_vnni"``: per output row chunk of 16 columns and kernel row ``ky``, one 64-byte load
    of the padded input row, one ``vpermb`` that gathers each column's 4 taps (``x*sw + j*dw``, ``j < 4``) into
    its 32-bit lane, and one ``vpdpbusd`` with the 4 tap weights broadcast (zero past ``KW``): 16 x 4 MACs per
    instruction.  int8 data is stored as ``x + 128`` (uint8) and ``-128 * sum(w)`` added back per channel."""
    c_, h, w = plan.channels, plan.height, plan.width
    (kh, kw), (sh, sw), (dh, dw) = plan.kernel, plan.strides, plan.dilation
    pt, pl, _, _ = plan.padding
    oh, ow = plan.out_hw
    rows = (oh - 1) * sh + (kh - 1) * dh + 1
    row_len = (ow - 1) * sw + (kw - 1) * dw + 1
    lanes, groups = VNNI_LANES, ceil_div(kw, TAPS)
    tile_rows, tile_cols = vnni_tile(plan)
    row_chunks, col_chunks = ceil_div(oh, tile_rows), ceil_div(ow, tile_cols)
    signed = plan.data_dtype == "int8"
    ramp = tirx.Ramp(tirx.const(0, "int32"), 1, 64)
    # lane i (past the tile: its last position again) <- row i // cols, column i % cols of the tile; byte j: tap j
    pos = tirx.min(tirx.floordiv(ramp, TAPS), tirx.Broadcast(tirx.const(tile_rows * tile_cols - 1, "int32"), 64))
    gather = tirx.Cast("int8x64", tirx.floordiv(pos, tile_cols) * (sh * row_len) + tirx.floormod(pos, tile_cols) * sw
                       + tirx.floormod(ramp, TAPS) * dw)
    lanes16 = tirx.Ramp(tirx.const(0, "int32"), 1, lanes)
    with IRBuilder() as ib:
        with T.prim_func(s_tir=True):
            T.func_name("conv2d_depthwise_vnni")
            T.func_attr({"tirx.noalias": True})
            data = T.arg("data", T.buffer(shape64(batch, c_, h, w), plan.data_dtype))
            weight = T.arg("weight_packed", T.buffer(packed_weight_shape(plan), "int8"))
            consts = [] if epilogue is None else [T.arg(f"epilogue_c{j}", T.buffer((k.size,), str(k.dtype)))
                                                  for j, k in enumerate(epilogue.consts)]
            out = T.arg("out", T.buffer(shape64(batch, c_, oh, ow), out_dtype))
            with T.sblock("root"):   # s_tir form: Relax's analyses of call_tir'd PrimFuncs expect it
                pad = T.sblock_alloc_buffer((rows * row_len + 64,), "uint8", scope="global")   # + one load of slack
                accum = T.sblock_alloc_buffer((lanes,), "int32", scope="local")
                with T.serial(0, rows * row_len + 64) as i:    # the padding, once: channels overwrite the rest
                    T.buffer_store(pad, tirx.const(128 if signed else 0, "uint8"), [i])
                with T.serial(0, batch) as b:
                    with T.serial(0, c_) as c:
                        with T.serial(0, max(0, min(h, rows - pt))) as iy:
                            with T.serial(0, max(0, min(w, row_len - pl))) as ix:
                                value = data[b, c, iy, ix]
                                if signed:
                                    value = (value.astype("int16") + tirx.const(128, "int16")).astype("uint8")
                                T.buffer_store(pad, value, [(iy + pt) * row_len + ix + pl])
                        offset = None
                        if signed:
                            total = sum(weight[c, ky, g, j].astype("int32") for ky in range(kh) for g in range(groups)
                                        for j in range(TAPS))
                            offset = total * tirx.const(-128, "int32")
                        with T.serial(0, row_chunks) as yo:
                            with T.serial(0, col_chunks) as xo:
                                y0 = tirx.min(yo * tile_rows, oh - tile_rows) if row_chunks > 1 else 0
                                x0 = tirx.min(xo * tile_cols, ow - tile_cols) if col_chunks > 1 else 0
                                T.buffer_store(accum, tirx.Broadcast(tirx.const(0, "int32"), lanes), [lanes16])
                                for ky in range(kh):
                                    for g in range(groups):
                                        base = (y0 * sh + ky * dh) * row_len + x0 * sw + g * TAPS * dw
                                        window = pad.vload([base], "uint8x64")
                                        taps = tirx.call_llvm_pure_intrin("uint8x64", PERMB, window, gather)
                                        packed = tirx.reinterpret("int32", weight.vload([c, ky, g, 0], "int8x4"))
                                        wvec = tirx.reinterpret("int8x64", tirx.Broadcast(packed, lanes))
                                        T.buffer_store(accum, tirx.call_llvm_pure_intrin(
                                            "int32x16", DPBUSD, accum.vload([0], "int32x16"), taps, wvec),
                                            [lanes16])
                                with T.vectorized(0, tile_rows * tile_cols) as v:
                                    value = accum[v] if offset is None else accum[v] + offset
                                    value = value.astype(plan.acc_dtype)
                                    if epilogue is not None:
                                        value = epilogue.apply(value, c, consts)
                                    T.buffer_store(out, value, [b, c, y0 + v // tile_cols, x0 + v % tile_cols])
    return ib.get()


def blocked_fits(plan) -> bool:
    """The blocked kernel: dilation 1 (4 consecutive columns of 16 channels are one 64-byte load)."""
    return tuple(plan.dilation) == (1, 1)


def _kernel_blocked(plan, batch, out_dtype: str, epilogue=None) -> tirx.PrimFunc:
    """Layout ``"depthwise_vnni"`` on ``(N, C/16, H, W, 16)`` data (see the module doc)."""
    cb_, h, w = plan.channels // BLOCK, plan.height, plan.width
    (kh, kw), (sh, sw) = plan.kernel, plan.strides
    pt, pl, _, _ = plan.padding
    oh, ow = plan.out_hw
    groups = ceil_div(kw, TAPS)
    rows, cols = (oh - 1) * sh + kh, (ow - 1) * sw + groups * TAPS
    tile = min(ow, 8)           # output columns with independent accumulators
    chunks = ceil_div(ow, tile)
    signed = plan.data_dtype == "int8"
    ramp = tirx.Ramp(tirx.const(0, "int32"), 1, 64)
    # byte 4c + j <- column j, channel c of the 4 loaded columns: index 16 j + c
    gather = tirx.Cast("int8x64", tirx.floormod(ramp, TAPS) * BLOCK + tirx.floordiv(ramp, TAPS))
    lanes16 = tirx.Ramp(tirx.const(0, "int32"), 1, BLOCK)
    with IRBuilder() as ib:
        with T.prim_func(s_tir=True):
            T.func_name("conv2d_depthwise_blocked")
            T.func_attr({"tirx.noalias": True})
            data = T.arg("data", T.buffer(shape64(batch, cb_, h, w, BLOCK), plan.data_dtype))
            weight = T.arg("weight_packed", T.buffer(packed_weight_shape(plan), "int8"))
            consts = [] if epilogue is None else [T.arg(f"epilogue_c{j}", T.buffer((k.size,), str(k.dtype)))
                                                  for j, k in enumerate(epilogue.consts)]
            out = T.arg("out", T.buffer(shape64(batch, cb_, oh, ow, BLOCK), out_dtype))
            with T.sblock("root"):
                pad = T.sblock_alloc_buffer((rows * cols * BLOCK,), "uint8", scope="global")
                accum = T.sblock_alloc_buffer((tile * BLOCK,), "int32", scope="local")
                start = T.sblock_alloc_buffer((BLOCK,), "int32", scope="local")
                with T.serial(0, rows * cols * BLOCK) as i:     # the padding, once: blocks overwrite the rest
                    T.buffer_store(pad, tirx.const(128 if signed else 0, "uint8"), [i])
                with T.serial(0, batch) as b:
                    with T.serial(0, cb_) as cb:
                        with T.serial(0, max(0, min(h, rows - pt))) as iy:
                            with T.serial(0, max(0, min(w, cols - pl))) as ix:
                                with T.vectorized(0, BLOCK) as v:
                                    value = data[b, cb, iy, ix, v]
                                    if signed:
                                        value = (value.astype("int16") + tirx.const(128, "int16")).astype("uint8")
                                    T.buffer_store(pad, value, [((iy + pt) * cols + ix + pl) * BLOCK + v])
                        # the accumulators start at -128 * sum(w) for int8 data (stored as x + 128)
                        init = tirx.Broadcast(tirx.const(0, "int32"), BLOCK)
                        if signed:
                            bias = tirx.Broadcast(tirx.const(-128 & 0xFF, "uint8"), 64)
                            for ky in range(kh):
                                for g in range(groups):
                                    init = tirx.call_llvm_pure_intrin(
                                        "int32x16", DPBUSD, init, bias, weight.vload([cb, ky, g, 0], "int8x64"))
                            init = tirx.Broadcast(tirx.const(0, "int32"), BLOCK) - init
                        T.buffer_store(start, init, [lanes16])
                        with T.serial(0, oh) as y:
                            with T.serial(0, chunks) as xo:
                                x0 = tirx.min(xo * tile, ow - tile) if chunks > 1 else tirx.const(0, "int32")
                                with T.unroll(0, tile) as t:
                                    T.buffer_store(accum, start.vload([0], "int32x16"),
                                                   [tirx.Ramp(t * BLOCK, 1, BLOCK)])
                                for ky in range(kh):
                                    for g in range(groups):
                                        wvec = weight.vload([cb, ky, g, 0], "int8x64")
                                        with T.unroll(0, tile) as t:
                                            base = ((y * sh + ky) * cols + (x0 + t) * sw + g * TAPS) * BLOCK
                                            taps = tirx.call_llvm_pure_intrin("uint8x64", PERMB,
                                                                              pad.vload([base], "uint8x64"), gather)
                                            T.buffer_store(accum, tirx.call_llvm_pure_intrin(
                                                "int32x16", DPBUSD, accum.vload([t * BLOCK], "int32x16"), taps, wvec),
                                                [tirx.Ramp(t * BLOCK, 1, BLOCK)])
                                with T.unroll(0, tile) as t:
                                    with T.vectorized(0, BLOCK) as v:
                                        value = accum[t * BLOCK + v].astype(plan.acc_dtype)
                                        if epilogue is not None:
                                            value = epilogue.apply(value, cb * BLOCK + v, consts)
                                        T.buffer_store(out, value, [b, cb, y, x0 + t, v])
    return ib.get()


def vnni_tile(plan) -> tuple:
    """``(rows, columns)`` of output positions in one vector of 16 lanes: 16 columns of a row, or, for rows
    of at most 8 columns (MobileNet's 7x7 and 14x14 maps), as many whole rows as fit while their inputs
    still fit one 64-byte load (a 7-column row alone would leave 9 lanes idle)."""
    (_, kw), (sh, sw), (_, dw) = plan.kernel, plan.strides, plan.dilation
    oh, ow = plan.out_hw
    if ow > VNNI_LANES // 2:
        return 1, min(ow, VNNI_LANES)
    row_len = (ow - 1) * sw + (kw - 1) * dw + 1
    rows = min(VNNI_LANES // ow, oh)
    while rows > 1 and (rows - 1) * sh * row_len + (ow - 1) * sw + (TAPS - 1) * dw >= 64:
        rows -= 1
    return rows, ow


def conv2d_primfuncs(plan, batch=None, epilogue=None) -> tuple:
    """``(weight_pack, None, kernel)``: the kernel takes ``(data, packed weight, *epilogue constants, out)``."""
    batch = tirx.Var("n", "int64") if batch is None else batch
    kh, kw = plan.kernel
    weight = te.placeholder((plan.out_channels, 1, kh, kw), "int8", name="weight")
    pack_func = te.create_prim_func([weight, pack_weight(weight, plan)], "int64")
    out_dtype = plan.acc_dtype if epilogue is None else epilogue.out_dtype
    make = _kernel_vnni if plan.layout == "depthwise_vnni" else _kernel
    if _blocked(plan):
        make = _kernel_blocked
    return pack_func, None, make(plan, batch, out_dtype, epilogue)
