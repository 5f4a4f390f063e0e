"""Max pooling of int8/uint8/int16 NCHW tensors on x86, vectorized along the output row.

TVM's own legalization of ``relax.nn.max_pool2d`` is an unscheduled TE compute (scalar loops; 1.27 ms of
ResNet-50's 224x224 inference).  Max pooling commutes with our integer formats (the stored integers are
pooled, the format is unchanged), so the realized graph pools int8/uint8 directly, in NCHW between the
conv kernels.  This kernel works like ``conv2d_depthwise``'s plain layout: per image and channel the plane
is copied into a buffer padded with the dtype's minimum (split by column phase for strided windows, so every
tap is a contiguous vector load), and each output row chunk of ``L`` columns (the last chunk overlapping
its neighbour instead of a scalar tail) is the lane-wise ``max`` over the ``KH * KW`` taps (``vpmaxub``/
``vpmaxsb`` on 64 byte lanes).  ``ceil_mode`` needs nothing special: the output size comes from the call's
type and the windows past the input read the padding minimum, which never wins against a real element.

Blocked activations (``layout="NCHW16c"``, ``layout.py``): ``max_pool2d_blocked_primfunc`` pools
``(N, C/16, H, W, 16)`` tensors; per image and channel block the ``(H, W, 16)`` plane is copied into a padded
buffer and each output position is the lane-wise ``max`` of its taps, 16 channels a vector (no transposes).

``legalize.py`` dispatches ``relax.nn.max_pool2d`` here for NCHW or NCHW16c integer data with static shapes on
x86 targets; anything else keeps TVM's legalization.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from tvm import tirx
from tvm.script.ir_builder import IRBuilder
from tvm.tirx.script.builder import ir as T

from .common import ceil_div, shape64
from .conv2d_depthwise import VECTOR_BYTES, copy_plane, fill

POOL_DTYPES = ("int8", "uint8", "int16")
CHUNK_OVERHEAD = 8
BLOCKED_LANES = 16      # channels per block of the NCHW16c layout


@dataclass(frozen=True)
class PoolPlan:
    channels: int
    height: int
    width: int
    kernel: tuple            # (KH, KW)
    strides: tuple
    padding: tuple           # (top, left, bottom, right)
    dilation: tuple
    out_hw: tuple            # from the call's type (ceil_mode included)
    data_dtype: str
    lanes: int

    @property
    def plane_shape(self) -> tuple:
        (kh, kw), (sh, sw), (dh, dw) = self.kernel, self.strides, self.dilation
        oh, ow = self.out_hw
        return sw, (oh - 1) * sh + (kh - 1) * dh + 1, ow + ((kw - 1) * dw) // sw


def plan_max_pool2d(data_shape, out_hw, dtype: str, pool_size, strides, padding, dilation, arch: str) -> PoolPlan:
    """The plan of one max pool, or ValueError when this kernel does not apply."""
    if dtype not in POOL_DTYPES or arch not in VECTOR_BYTES:
        raise ValueError(f"max_pool2d: {dtype} on {arch} is not ours")
    padding = tuple(int(p) for p in padding)
    if len(padding) == 2:
        padding = padding * 2
    _, c, h, w = (int(s) for s in data_shape)
    oh, ow = (int(s) for s in out_hw)
    lanes_full = VECTOR_BYTES[arch] // np.dtype(dtype).itemsize
    best, best_cost = ow, None
    for lanes in (lanes_full // 4, lanes_full // 2, lanes_full):
        if lanes > ow:
            continue
        cost = ceil_div(ow, lanes) * (lanes + CHUNK_OVERHEAD)
        if best_cost is None or cost < best_cost:
            best, best_cost = lanes, cost
    return PoolPlan(c, h, w, tuple(int(k) for k in pool_size), tuple(int(s) for s in strides), padding,
                    tuple(int(d) for d in dilation), (oh, ow), dtype, best)


def max_pool2d_primfunc(plan: PoolPlan, batch) -> tirx.PrimFunc:
    """``(data, out)``: NCHW max pool of ``plan``."""
    (kh, kw), (sh, sw), (dh, dw) = plan.kernel, plan.strides, plan.dilation
    oh, ow = plan.out_hw
    phases, rows, cols = plan.plane_shape
    lanes = plan.lanes
    chunks = ceil_div(ow, lanes)
    lowest = int(np.iinfo(plan.data_dtype).min)
    with IRBuilder() as ib:
        with T.prim_func(s_tir=True):
            T.func_name("max_pool2d")
            T.func_attr({"tirx.noalias": True})
            data = T.arg("data", T.buffer(shape64(batch, plan.channels, plan.height, plan.width), plan.data_dtype))
            out = T.arg("out", T.buffer(shape64(batch, plan.channels, oh, ow), plan.data_dtype))
            with T.sblock("root"):   # s_tir form: Relax's analyses of call_tir'd PrimFuncs expect it
                pad = T.sblock_alloc_buffer((phases, rows, cols), plan.data_dtype, scope="global")
                fill(pad, rows, cols, lowest, plan.data_dtype, phases)
                with T.serial(0, batch) as b:
                    with T.serial(0, plan.channels) as c:
                        copy_plane(pad, data, b, c, plan, rows, cols)
                        with T.serial(0, oh) as y:
                            with T.serial(0, chunks) as xo:
                                x0 = tirx.min(xo * lanes, ow - lanes) if chunks > 1 else tirx.const(0, "int32")
                                with T.vectorized(0, lanes) as v:
                                    value = None
                                    for ky in range(kh):
                                        for kx in range(kw):
                                            tap = pad[(kx * dw) % sw, y * sh + ky * dh, x0 + v + (kx * dw) // sw]
                                            value = tap if value is None else tirx.max(value, tap)
                                    T.buffer_store(out, value, [b, c, y, x0 + v])
    return ib.get()


def max_pool2d_blocked_primfunc(plan: PoolPlan, batch) -> tirx.PrimFunc:
    """``(data, out)``: max pool of ``plan`` on ``(N, C/16, H, W, 16)`` data (``plan.channels`` = C/16)."""
    (kh, kw), (sh, sw), (dh, dw) = plan.kernel, plan.strides, plan.dilation
    oh, ow = plan.out_hw
    pt, pl, _, _ = plan.padding
    rows, cols = (oh - 1) * sh + (kh - 1) * dh + 1, (ow - 1) * sw + (kw - 1) * dw + 1
    lowest = int(np.iinfo(plan.data_dtype).min)
    block, dt = BLOCKED_LANES, plan.data_dtype
    with IRBuilder() as ib:
        with T.prim_func(s_tir=True):
            T.func_name("max_pool2d_blocked")
            T.func_attr({"tirx.noalias": True})
            data = T.arg("data", T.buffer(shape64(batch, plan.channels, plan.height, plan.width, block), dt))
            out = T.arg("out", T.buffer(shape64(batch, plan.channels, oh, ow, block), dt))
            with T.sblock("root"):
                pad = T.sblock_alloc_buffer((rows, cols, block), dt, scope="global")
                with T.serial(0, rows) as y:
                    with T.serial(0, cols) as x:
                        with T.vectorized(0, block) as v:
                            T.buffer_store(pad, tirx.const(lowest, dt), [y, x, v])
                with T.serial(0, batch) as b:
                    with T.serial(0, plan.channels) as c:
                        with T.serial(0, max(0, min(plan.height, rows - pt))) as iy:
                            with T.serial(0, max(0, min(plan.width, cols - pl))) as ix:
                                with T.vectorized(0, block) as v:
                                    T.buffer_store(pad, data[b, c, iy, ix, v], [iy + pt, ix + pl, v])
                        with T.serial(0, oh) as y:
                            with T.serial(0, ow) as x:
                                with T.vectorized(0, block) as v:
                                    value = None
                                    for ky in range(kh):
                                        for kx in range(kw):
                                            tap = pad[y * sh + ky * dh, x * sw + kx * dw, v]
                                            value = tap if value is None else tirx.max(value, tap)
                                    T.buffer_store(out, value, [b, c, y, x, v])
    return ib.get()
