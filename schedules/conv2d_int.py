"""int8/uint8 x int8 conv2d (NCHW data, OIHW weights) with int16 or int32 accumulators, for NEON and AVX.

The arithmetic (the "desc") is plain: ``out[n, o, y, x] = sum_{i, ky, kx} acc(x_pad[n, g*ICg + i, y*sh + ky*dh,
x*sw + kx*dw]) * acc(w[o, i, ky, kx])`` with ``acc`` the accumulator dtype and ``g = o // OCg``.  With
int16 accumulators the result is exact when it fits in int16 (see the wrap argument below); ``Realize``
only chooses int16 when its L1 bound proves that.

The kernel computes it in a vector-friendly packed layout and unpacks at the end:

- output positions are flattened (``p = y*OW + x``) and padded to a multiple of the register block ``R``
  (the padded input gets extra zero rows so the phantom positions read in bounds and are dropped);
- layout ``"channels"`` (regular, 1x1 and grouped convs with many output channels per group): weights
  packed to ``(G, OCB, ICg, KH, KW, L)``, zero-padded to ``L`` lanes; one input value is broadcast against
  ``L`` output channels.  On NEON with int16 accumulators each step is ``ld1r`` of the input and
  ``smlal``/``smlal2`` into two ``.8h`` accumulators per position; ``R`` positions share the weight vector.
- layout ``"groups"`` (depthwise, and grouped convs with few channels per group): input packed to
  ``(N, GB, ICg, H', W', L)`` and weights to ``(GB, OCg, ICg, KH, KW, L)``: one vector holds ``L`` groups, so
  no lane is wasted on a depthwise conv.  On x86 targets depthwise convs (multiplier 1, int8 weights) take
  ``conv2d_depthwise.py``'s layouts instead (``"depthwise"``, ``"depthwise_vnni"``): NCHW planes, the vector
  along the output row, no transposes in or out.

Schedule (s_tir): ``n, g, ob, p_outer, [i, ky, kx], p_inner (unrolled), lane (vectorized)``, the ``R x L``
accumulators in a ``local`` buffer (registers after LLVM's SROA), initialised and written back once per
block.  The weight packing is a separate PrimFunc; the legalization (``legalize.py``) runs it on the host
at compile time when the weights are constants.

uint8 data with int16 accumulators: NEON has no mixed-sign widening multiply-accumulate, and the plain form
(``ushll`` + ``mla .8h``) runs at half the rate of ``smlal``.  So the kernel shifts the data into int8,
``x' = x - 128``, multiplies with ``smlal`` and adds back ``128 * sum(w)`` per output channel (a constant
computed by the ``weight_offset`` PrimFunc, at compile time for constant weights):
``sum x*w = sum x'*w + 128 * sum w``, padding included (a padded zero becomes ``-128``).  The partial sums
of ``x'*w`` may leave the int16 range, but the adds wrap (TVM emits plain, non-``nsw`` adds for 16-bit
integers; only the int8 x int8 products get ``nsw``, which they satisfy) and the identity holds modulo
``2**16``, so the result is exact whenever it fits in int16 -- which is what the accumulator proof
guarantees.  The same wrap argument makes every int16 kernel here
exact whenever the *final* sum fits, a weaker condition than the L1 bound on partial sums.
"""

from __future__ import annotations

from dataclasses import dataclass

import tvm
from tvm import te, tirx
from tvm.s_tir import Schedule

from .common import ConvGeometry, ceil_div as _ceil_div, has_block as _has_block, tile_unpack
from .conv2d_vnni import conv2d_primfuncs as vnni_primfuncs
from .epilogue import const_placeholders
from .targets import KernelConfig, kernel_config

INPUT_DTYPES = ("int8", "uint8")
VNNI_MAX_BLOCK = 16      # positions blocked in zmm accumulators (32 registers)
WEIGHT_DTYPES = ("int8", "int16")
ACC_DTYPES = ("int16", "int32")
EXACT_FLOAT = "float64"  # the simulation's dtype: data, weights and sums all float64 (see exact_float below)


def exact_float(data_dtype: str, weight_dtype: str, acc_dtype: str) -> bool:
    """float64 operands into a float64 sum: the simulated graph's convs (``tvm_fxp.passes.Simulate``, the
    search scorer).  Their operands are fake-quantized, integers times ``2**-f``, so every product and partial
    sum is exact and the kernels' summation order gives TVM's own result bit for bit."""
    return data_dtype == weight_dtype == acc_dtype == EXACT_FLOAT


def check_dtypes(kind: str, data_dtype: str, weight_dtype: str, acc_dtype: str) -> None:
    if exact_float(data_dtype, weight_dtype, acc_dtype):
        return
    if data_dtype not in INPUT_DTYPES:
        raise ValueError(f"{kind} input dtype {data_dtype} not in {INPUT_DTYPES} (or all {EXACT_FLOAT})")
    if acc_dtype not in ACC_DTYPES:
        raise ValueError(f"accumulator dtype {acc_dtype} not in {ACC_DTYPES} (or all {EXACT_FLOAT})")
    if weight_dtype not in WEIGHT_DTYPES:
        raise ValueError(f"{kind} weight dtype {weight_dtype} not in {WEIGHT_DTYPES} (or all {EXACT_FLOAT})")


def choose_block(positions: int, max_block: int, divides: bool = False) -> int:
    """Register block ``R`` minimising ``ceil(P/R) * (R + 1)``: padded work plus one weight load per block
    (``divides``: among the ``R`` that divide ``P``)."""
    best, best_cost = 1, None
    for r in range(1, max(1, min(max_block, positions)) + 1):
        if divides and positions % r:
            continue
        cost = _ceil_div(positions, r) * (r + 1)
        if best_cost is None or cost <= best_cost:
            best, best_cost = r, cost
    return best


@dataclass(frozen=True)
class Conv2dPlan(ConvGeometry):
    """Static shape, layout and blocking of one conv2d kernel (batch may be symbolic)."""

    channels: int            # C
    height: int
    width: int
    out_channels: int        # OC
    kernel: tuple            # (KH, KW)
    strides: tuple
    padding: tuple           # (top, left, bottom, right), as relax.nn.conv2d
    dilation: tuple
    groups: int
    data_dtype: str
    acc_dtype: str
    layout: str              # "channels" | "groups"
    lanes: int               # L
    block: int               # R
    weight_dtype: str = "int8"   # int16 for weights wider than 8 bits (no uint8 offset then, see offset_data)
    data_layout: str = "NCHW"    # or "NCHW16c" (layout "vnni" only: activations blocked by ``layout.py``)
    out_layout: str = "NCHW"

    @property
    def in_per_group(self) -> int:
        return self.channels // self.groups

    @property
    def out_per_group(self) -> int:
        return self.out_channels // self.groups

    @property
    def padded_positions(self) -> int:
        return _ceil_div(self.positions, self.block) * self.block

    @property
    def padded_hw(self) -> tuple:
        """Input height/width after padding, with extra zero rows for the phantom positions."""
        (kh, _), (sh, _), (dh, _) = self.kernel, self.strides, self.dilation
        pt, pl, pb, pr = self.padding
        _, ow = self.out_hw
        last_row = ((self.padded_positions - 1) // ow) * sh + (kh - 1) * dh
        return max(self.height + pt + pb, last_row + 1), self.width + pl + pr

    @property
    def offset_data(self) -> bool:
        """uint8 data into int16 accumulators: run on ``x - 128`` (int8) and add ``128 * sum(w)`` back.

        Not with int16 weights: ``(x - 128) * w`` could leave int16 where ``x * w`` cannot (each product is
        at most the layer's proven L1 bound), so those kernels multiply the zero-extended ``x`` directly.
        Layout ``"vnni"`` (u8 x s8) shifts int8 data instead: ``x + 128``, minus ``128 * sum(w)`` (int32)."""
        if self.layout == "vnni":
            return self.data_dtype == "int8"
        if self.layout.startswith(("avx2", "depthwise")):
            return False
        return self.data_dtype == "uint8" and self.acc_dtype == "int16" and self.weight_dtype == "int8"

    @property
    def packed_weight_dtype(self) -> str:
        """The packed weights' dtype: int8 on layout "vnni" (int16 weights split into int8 parts there)."""
        return "int8" if self.layout == "vnni" else self.weight_dtype

    @property
    def offset_dtype(self) -> str:
        return "int32" if self.layout == "vnni" else self.acc_dtype

    @property
    def vector_blocks(self) -> int:
        """OCB (channels layout: vectors per group) or GB (groups layout: vectors of groups)."""
        if self.layout == "channels":
            return _ceil_div(self.out_per_group, self.lanes)
        return _ceil_div(self.groups, self.lanes)

    @property
    def packed_weight_shape(self) -> tuple:
        kh, kw = self.kernel
        if self.layout == "vnni":
            from .conv2d_vnni import packed_weight_shape
            return packed_weight_shape(self)
        if self.layout.startswith("avx2"):
            from .conv2d_avx2 import packed_weight_shape as avx2_shape
            return avx2_shape(self)
        if self.layout.startswith("depthwise"):
            from .conv2d_depthwise import packed_weight_shape as depthwise_shape
            return depthwise_shape(self)
        if self.layout == "channels":
            return (self.groups, self.vector_blocks, self.in_per_group, kh, kw, self.lanes)
        return (self.vector_blocks, self.out_per_group, self.in_per_group, kh, kw, self.lanes)

    @property
    def macs_per_image(self) -> int:
        kh, kw = self.kernel
        return self.positions * self.out_channels * self.in_per_group * kh * kw


def plan_conv2d(data_shape, weight_shape, data_dtype: str, acc_dtype: str, strides=(1, 1),
                padding=(0, 0, 0, 0), dilation=(1, 1), groups: int = 1,
                config: KernelConfig | None = None, target=None, layout: str | None = None,
                weight_dtype: str = "int8", data_layout: str = "NCHW", out_layout: str = "NCHW") -> Conv2dPlan:
    """Check the operands and choose layout and block for ``config`` (or ``kernel_config(target)``).

    ``data_shape`` is ``(N, C, H, W)`` (``N`` may be symbolic and is ignored), ``weight_shape`` ``(OC, C/G, KH,
    KW)``; ``padding`` has 2 or 4 entries as in ``relax.nn.conv2d``.  ``data_layout``/``out_layout``
    ``"NCHW16c"`` (channels in blocks of 16, ``C`` and ``OC`` multiples of 16) ask for the VNNI kernel's
    blocked activations (ValueError where it does not apply).
    """
    if (data_layout, out_layout) != ("NCHW", "NCHW"):
        plan = plan_conv2d(data_shape, weight_shape, data_dtype, acc_dtype, strides, padding, dilation, groups,
                           config, target, layout, weight_dtype)
        if plan.layout == "depthwise_vnni" and data_layout == out_layout == "NCHW16c":
            from .conv2d_depthwise import blocked_fits
            if plan.channels % 16 or not blocked_fits(plan):
                raise ValueError(f"conv2d: blocked depthwise needs channels in blocks of 16 and dilation 1 "
                                 f"({plan.channels} channels, dilation {plan.dilation})")
            return Conv2dPlan(**{**plan.__dict__, "data_layout": data_layout, "out_layout": out_layout})
        if plan.layout != "vnni" or {data_layout, out_layout} - {"NCHW", "NCHW16c"}:
            raise ValueError(f"conv2d: layouts {data_layout}/{out_layout} need the VNNI kernel (plan: {plan.layout})")
        if (data_layout == "NCHW16c" and plan.channels % 16) or (out_layout == "NCHW16c" and plan.out_channels % 16):
            raise ValueError(f"conv2d: NCHW16c needs channels in blocks of 16 ({plan.channels} -> {plan.out_channels})")
        block = plan.block
        if out_layout == "NCHW16c":     # a block dividing the positions: the registers go straight to the output
            block = choose_block(plan.positions, VNNI_MAX_BLOCK, divides=True)
            if block < 4 <= plan.positions:
                raise ValueError(f"conv2d: no register block of 4 to {VNNI_MAX_BLOCK} divides {plan.positions} "
                                 "positions (blocked output)")
        return Conv2dPlan(**{**plan.__dict__, "block": block, "data_layout": data_layout, "out_layout": out_layout})
    check_dtypes("conv2d", data_dtype, weight_dtype, acc_dtype)
    if config is None:
        config = kernel_config(target or tvm.target.Target.current(), acc_dtype)
    _, c, h, w = (int(s) if i else s for i, s in enumerate(data_shape))
    oc, icg, kh, kw = (int(s) for s in weight_shape)
    padding = tuple(int(p) for p in padding)
    if len(padding) == 2:
        padding = padding * 2
    if c % groups or oc % groups or icg != c // groups:
        raise ValueError(f"conv2d: {c} input / {oc} output channels, weight {tuple(weight_shape)}, "
                         f"do not split into {groups} groups")
    ocg = oc // groups
    # vector lanes: the full vector or half of it, whichever pads the channels (or groups) less
    options = []
    for lanes in (config.lanes, config.lanes // 2) if config.lanes >= 16 else (config.lanes,):
        for lay in ("channels", "groups"):
            work = groups * _ceil_div(ocg, lanes) * lanes if lay == "channels" else \
                _ceil_div(groups, lanes) * lanes * ocg
            if layout in (None, lay):
                options.append((work, -lanes, lay != "channels", lanes, lay))
    requested = layout
    _, _, _, lanes, layout = min(options) if options else (0, 0, 0, 16, layout)
    # any channel count: stems pad their channels to 4 (RGB measured 10x the "channels" layout, grey -- 3 of 4
    # lanes zero -- still 1.6-1.9x: fmnist_vgg stem 8.7 -> 5.4 us, fmnist_resnet 16.9 -> 9.0)
    # int16 weights only on request: the legalization checks that they split into int8 parts (conv2d_vnni)
    if requested in (None, "vnni") and groups == 1 and (weight_dtype == "int8" or requested == "vnni") and \
            (requested == "vnni" or config.vnni):
        layout, lanes = "vnni", 16
        plan = Conv2dPlan(c, h, w, oc, (kh, kw), tuple(int(s) for s in strides), padding,
                          tuple(int(d) for d in dilation), 1, data_dtype, acc_dtype, layout, lanes, 1, weight_dtype)
        # int16 weights: two sums (lo, hi) per position in registers, so half the block
        most = VNNI_MAX_BLOCK // (2 if weight_dtype == "int16" else 1)
        return Conv2dPlan(**{**plan.__dict__, "block": choose_block(plan.positions, most)})
    elif layout == "vnni":
        raise ValueError("conv2d: layout 'vnni' needs groups == 1")
    if requested in (None, "depthwise", "depthwise_vnni"):
        from . import conv2d_depthwise as dw
        if dw.supports(groups, c, oc, weight_dtype, acc_dtype, config.arch if requested is None else "x86-avx512"):
            strides, dilation = tuple(int(s) for s in strides), tuple(int(d) for d in dilation)
            vnni = requested == "depthwise_vnni" or (requested is None and config.vbmi)
            if vnni and not dw.vnni_fits(strides, dilation):
                if requested is not None:
                    raise ValueError(f"conv2d: layout 'depthwise_vnni' does not fit stride {strides[1]}, "
                                     f"dilation {dilation[1]} (one 64-byte row load per 16 outputs)")
                vnni = False
            plan = Conv2dPlan(c, h, w, oc, (kh, kw), strides, padding, dilation, int(groups), data_dtype, acc_dtype,
                              "depthwise_vnni" if vnni else "depthwise", dw.VNNI_LANES, 1, weight_dtype)
            oh, ow = plan.out_hw
            if oh < 1 or ow < 1:
                raise ValueError(f"conv2d: empty output {oh}x{ow}")
            if vnni:
                return plan
            arch = config.arch if config.arch in dw.VECTOR_BYTES else "x86-avx512"
            return Conv2dPlan(**{**plan.__dict__, "lanes": dw.choose_lanes(ow, acc_dtype, arch)})
        if requested is not None:
            raise ValueError(f"conv2d: layout {requested!r} needs groups == channels == out channels, int8 "
                             "weights and int16/int32 accumulators")
    avx2 = _avx2_layout(requested, config, c, groups, data_dtype, weight_dtype, acc_dtype)
    if avx2 is not None:
        from .conv2d_avx2 import LAYOUTS, MAX_BLOCK
        plan = Conv2dPlan(c, h, w, oc, (kh, kw), tuple(int(s) for s in strides), padding,
                          tuple(int(d) for d in dilation), 1, data_dtype, acc_dtype, avx2, LAYOUTS[avx2][0], 1,
                          weight_dtype)
        return Conv2dPlan(**{**plan.__dict__, "block": choose_block(plan.out_hw[1], MAX_BLOCK[avx2])})   # of a row
    plan = Conv2dPlan(c, h, w, oc, (kh, kw), tuple(int(s) for s in strides), padding,
                      tuple(int(d) for d in dilation), int(groups), data_dtype, acc_dtype, layout, lanes, 1,
                      weight_dtype)
    oh, ow = plan.out_hw
    if oh < 1 or ow < 1:
        raise ValueError(f"conv2d: empty output {oh}x{ow}")
    return Conv2dPlan(**{**plan.__dict__, "block": choose_block(plan.positions, config.block_limit(lanes))})


def _avx2_layout(requested, config, c, groups, data_dtype, weight_dtype, acc_dtype) -> str | None:
    """``conv2d_avx2``'s layouts on AVX2 targets without AVX-512: ``avx2_acc16`` for int16 accumulators (the
    int16 dtype is Realize's proof that no pair sum saturates), ``avx2_madd`` for int32 only on request."""
    if requested is not None and not str(requested).startswith("avx2"):
        return None
    from .conv2d_avx2 import LAYOUTS, madd_preferred
    ok = groups == 1 and weight_dtype == "int8" and data_dtype == "uint8" and c >= 2
    if requested is not None:
        if not ok or LAYOUTS[requested][2] != acc_dtype:
            raise ValueError(f"conv2d: layout {requested!r} needs uint8 data, int8 weights, groups 1 and "
                             f"{LAYOUTS[requested][2]} accumulators")
        return requested
    if not ok or config.arch != "x86-avx2":
        return None
    if acc_dtype == "int16":
        return "avx2_acc16"
    return "avx2_madd" if acc_dtype == "int32" and madd_preferred() else None


# ----------------------------------------------------------------------------------------- compute (TE)

def pack_weight(weight: te.Tensor, plan: Conv2dPlan) -> te.Tensor:
    """OIHW int8 weights -> the plan's packed layout, zero in the padded lanes."""
    ocg, lanes, zero = plan.out_per_group, plan.lanes, tirx.const(0, weight.dtype)
    if plan.layout == "channels":
        def f(g, ob, i, ky, kx, v):
            o = ob * lanes + v
            return tirx.if_then_else(o < ocg, weight[g * ocg + tirx.min(o, ocg - 1), i, ky, kx], zero)
    else:
        def f(gb, o, i, ky, kx, v):
            g = gb * lanes + v
            return tirx.if_then_else(g < plan.groups, weight[tirx.min(g, plan.groups - 1) * ocg + o, i, ky, kx], zero)
    return te.compute(plan.packed_weight_shape, f, name="weight_pack")


def weight_offset(weight: te.Tensor, plan: Conv2dPlan) -> te.Tensor:
    """``128 * sum(w[o])`` per output channel, wrapped to int16 (for ``plan.offset_data``)."""
    _, icg, kh, kw = weight.shape
    ri, ry, rx = te.reduce_axis((0, icg), "ri"), te.reduce_axis((0, kh), "ry"), te.reduce_axis((0, kw), "rx")
    total = te.compute((plan.out_channels,), lambda o: te.sum(
        weight[o, ri, ry, rx].astype(plan.acc_dtype), axis=[ri, ry, rx]), name="weight_sum")
    return te.compute((plan.out_channels,), lambda o: total[o] * tirx.const(128, plan.acc_dtype),
                      name="weight_offset")


def _stored_data(value, plan) -> tirx.PrimExpr:
    """The data as the kernel multiplies it: unchanged, or ``x - 128`` as int8 (``plan.offset_data``)."""
    if not plan.offset_data:
        return value
    return (value.astype("int16") - tirx.const(128, "int16")).astype("int8")


def conv2d_compute(data: te.Tensor, packed: te.Tensor, plan: Conv2dPlan,
                   offset: te.Tensor | None = None, epilogue=None, params=()) -> te.Tensor:
    """NCHW ``data`` x packed weights -> NCHW accumulators of ``plan.acc_dtype``.

    ``offset`` (``weight_offset``) is required exactly when ``plan.offset_data``.  With an ``epilogue``
    (``epilogue.Epilogue``, its per-channel constants in ``params``) the result is the epilogue of the
    accumulators, computed in the packed layout (stage ``epilogue``, so that the schedule can apply it to the
    registers) before the unpacking.
    """
    if plan.offset_data != (offset is not None):
        raise ValueError("conv2d_compute: pass weight_offset exactly for uint8 data into int16")
    n = data.shape[0]
    (kh, kw), (sh, sw), (dh, dw) = plan.kernel, plan.strides, plan.dilation
    pt, pl, _, _ = plan.padding
    hp, wp = plan.padded_hw
    oh, ow = plan.out_hw
    lanes, icg, ocg, acc = plan.lanes, plan.in_per_group, plan.out_per_group, plan.acc_dtype
    zero = _stored_data(tirx.const(0, data.dtype), plan)

    def finish(value, o):
        return value if offset is None else value + offset[o]

    def _epilogue(value, o):      # o: the output channel (clamped in padded lanes, whose values are dropped)
        return epilogue.apply(finish(value, o), o, params)

    def inside(y, x):
        return tirx.all(y >= pt, y < plan.height + pt, x >= pl, x < plan.width + pl)

    ri = te.reduce_axis((0, icg), "ri")
    rky = te.reduce_axis((0, kh), "rky")
    rkx = te.reduce_axis((0, kw), "rkx")
    if plan.layout == "channels":
        pad = te.compute((n, plan.channels, hp, wp), lambda b, c, y, x: tirx.if_then_else(
            inside(y, x), _stored_data(data[b, c, y - pt, x - pl], plan), zero), name="data_pad")
        conv = te.compute(
            (n, plan.groups, plan.vector_blocks, plan.padded_positions, lanes),
            lambda b, g, ob, p, v: te.sum(
                pad[b, g * icg + ri, (p // ow) * sh + rky * dh, (p % ow) * sw + rkx * dw].astype(acc)
                * packed[g, ob, ri, rky, rkx, v].astype(acc), axis=[ri, rky, rkx]),
            name="conv")
        if epilogue is not None:
            epi = te.compute(conv.shape, lambda b, g, ob, p, v: _epilogue(
                conv[b, g, ob, p, v], g * ocg + tirx.min(ob * lanes + v, ocg - 1)), name="epilogue")
            return te.compute((n, plan.out_channels, oh, ow), lambda b, o, y, x: epi[
                b, o // ocg, (o % ocg) // lanes, y * ow + x, (o % ocg) % lanes], name="conv_unpack")
        return te.compute((n, plan.out_channels, oh, ow), lambda b, o, y, x: finish(conv[
            b, o // ocg, (o % ocg) // lanes, y * ow + x, (o % ocg) % lanes], o), name="conv_unpack")
    groups = plan.groups
    pad = te.compute(
        (n, plan.vector_blocks, icg, hp, wp, lanes),
        lambda b, gb, i, y, x, v: tirx.if_then_else(
            tirx.all(inside(y, x), gb * lanes + v < groups),
            _stored_data(data[b, tirx.min(gb * lanes + v, groups - 1) * icg + i, y - pt, x - pl], plan), zero),
        name="data_pack")
    conv = te.compute(
        (n, plan.vector_blocks, ocg, plan.padded_positions, lanes),
        lambda b, gb, o, p, v: te.sum(
            pad[b, gb, ri, (p // ow) * sh + rky * dh, (p % ow) * sw + rkx * dw, v].astype(acc)
            * packed[gb, o, ri, rky, rkx, v].astype(acc), axis=[ri, rky, rkx]),
        name="conv")
    if epilogue is not None:
        epi = te.compute(conv.shape, lambda b, gb, o, p, v: _epilogue(
            conv[b, gb, o, p, v], tirx.min(gb * lanes + v, groups - 1) * ocg + o), name="epilogue")
        return te.compute((n, plan.out_channels, oh, ow), lambda b, o, y, x: epi[
            b, (o // ocg) // lanes, o % ocg, y * ow + x, (o // ocg) % lanes], name="conv_unpack")
    return te.compute((n, plan.out_channels, oh, ow), lambda b, o, y, x: finish(conv[
        b, (o // ocg) // lanes, o % ocg, y * ow + x, (o // ocg) % lanes], o), name="conv_unpack")


# ----------------------------------------------------------------------------------------- schedule

def schedule_conv2d(func: tirx.PrimFunc, plan: Conv2dPlan) -> tirx.PrimFunc:
    """Register-block and vectorize a PrimFunc made from ``conv2d_compute``."""
    sch = Schedule(func)
    conv = sch.get_sblock("conv")
    n, g, ob, p, v, ri, rky, rkx = sch.get_loops(conv)
    po, pi = sch.split(p, [None, plan.block])
    sch.reorder(n, g, ob, po, ri, rky, rkx, pi, v)
    acc = sch.cache_write(conv, 0, "local")
    sch.reverse_compute_at(acc, po)
    if _has_block(sch, "epilogue"):   # the fused epilogue runs on the registers, as they are written back
        sch.reverse_compute_inline(sch.get_sblock("epilogue"))
    sch.vectorize(v)
    sch.unroll(pi)
    if plan.kernel[1] <= 7:
        sch.unroll(rkx)     # lets LLVM reuse one broadcast input across neighbouring positions (stride 1)
    *_, ai, av = sch.get_loops(acc)
    sch.vectorize(av)
    sch.unroll(ai)
    if plan.acc_dtype == EXACT_FLOAT:
        sch.parallel(n)     # the simulation scores hundreds of images a call (inference kernels: one thread)
    init = sch.decompose_reduction(conv, ri)   # after vectorize: see ARM.md
    *_, ii, iv = sch.get_loops(init)
    sch.vectorize(iv)
    sch.unroll(ii)
    pad = sch.get_sblock("data_pad" if plan.layout == "channels" else "data_pack")
    sch.compute_at(pad, n)
    if plan.layout == "groups":
        sch.vectorize(sch.get_loops(pad)[-1])
    if plan.acc_dtype != EXACT_FLOAT and (plan.layout == "groups" or plan.groups == 1) and \
            (plan.layout == "groups") == (plan.out_per_group == 1):
        tile_unpack(sch, plan.lanes)    # one output channel per lane: the unpack is a (positions x lanes) transpose
    return sch.mod["main"]


# ----------------------------------------------------------------------------------------- PrimFuncs

def _data_placeholder(plan: Conv2dPlan, batch) -> te.Tensor:
    return te.placeholder((batch, plan.channels, plan.height, plan.width), plan.data_dtype, name="data")


def conv2d_primfuncs(plan: Conv2dPlan, batch=None, epilogue=None) -> tuple:
    if plan.layout == "bitserial":    # bitserial.BitserialPlan (legalize.conv2d_plan_for: ternary, <= 4-bit data)
        from .bitserial import bitserial_primfuncs
        return bitserial_primfuncs(plan, batch, epilogue)
    if plan.layout == "paired":       # paired_int32.PairedPlan (legalize.conv2d_plan_for on aarch64)
        from .paired_int32 import paired_primfuncs
        return paired_primfuncs(plan, batch, epilogue=epilogue)
    if plan.layout == "vnni":
        return vnni_primfuncs(plan, batch, epilogue)
    if plan.layout.startswith("avx2"):
        from .conv2d_avx2 import conv2d_primfuncs as avx2_primfuncs
        return avx2_primfuncs(plan, batch, epilogue)
    if plan.layout.startswith("depthwise"):
        from .conv2d_depthwise import conv2d_primfuncs as depthwise_primfuncs
        return depthwise_primfuncs(plan, batch, epilogue)
    return _primfuncs(plan, batch, epilogue)


def _primfuncs(plan: Conv2dPlan, batch=None, epilogue=None) -> tuple:
    """``(weight_pack, weight_offset or None, conv2d)`` PrimFuncs for ``plan``.

    ``batch``: an int, or None for a symbolic ``n``.  The conv2d PrimFunc takes ``(data, packed_weight,
    [offset,] out)``; ``weight_offset`` exists only for ``plan.offset_data``.  With an ``epilogue``
    (``epilogue.Epilogue``) it takes ``(data, packed_weight, [offset,] *epilogue constants, out)`` and ``out``
    is the epilogue's result (dtype ``epilogue.out_dtype``).
    """
    batch = tirx.Var("n", "int64") if batch is None else batch
    kh, kw = plan.kernel
    weight = te.placeholder((plan.out_channels, plan.in_per_group, kh, kw), plan.weight_dtype, name="weight")
    pack_func = te.create_prim_func([weight, pack_weight(weight, plan)], "int64")
    offset_func = None
    data = _data_placeholder(plan, batch)
    packed = te.placeholder(plan.packed_weight_shape, plan.weight_dtype, name="weight_packed")
    params = [data, packed]
    offset = None
    if plan.offset_data:
        offset_func = te.create_prim_func([weight, weight_offset(weight, plan)], "int64")
        offset = te.placeholder((plan.out_channels,), plan.acc_dtype, name="weight_offset")
        params.append(offset)
    consts = const_placeholders(epilogue)
    out = conv2d_compute(data, packed, plan, offset, epilogue, consts)
    from .tuned import schedule_kernel   # the tuned schedule when a tuning database is in scope

    conv_func = schedule_kernel(te.create_prim_func([*params, *consts, out], "int64"), plan, schedule_conv2d)
    return pack_func, offset_func, conv_func
