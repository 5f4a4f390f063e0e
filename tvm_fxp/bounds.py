"""Accumulator bounds: proofs that an integer layer cannot overflow its accumulator.

For a weighted layer with stored input integers ``|x| <= X`` (``X = 2**(w-1)`` signed, ``2**w - 1``
unsigned), stored weights ``Wq`` and the bias shifted to the accumulator scale ``Bq``:

- worst case (hls4ml's formula): ``X * fan_in * max|Wq| + max|Bq|`` -> ``w_x + w_w + ceil(log2 fan_in)`` bits;
- data-dependent L1 bound (A2Q-style), per output channel ``c``: ``X * sum_k |Wq[c, k]| + |Bq[c]|``.

Both bound every partial sum too, whatever the summation order, so they hold for any kernel schedule.
The integer graph uses int32 when the tighter bound fits 31 bits with a margin for the rounding offset,
else int64.  The float64 simulation is exact while every accumulator magnitude stays below ``2**52``
(every value is an integer multiple of ``2**-frac`` and float64 holds 53-bit integers); plans beyond that
are refused.
"""

from __future__ import annotations

from dataclasses import dataclass

import math

import numpy as np

from .formats import FixedPointFormat, bits_for_magnitude, round_half_away
from .plan import AccumulatorProof, PlanError

INT32_LIMIT = 1 << 30   # keeps acc + 2**(s-1) and aligned operands inside int32
SIM_EXACT_LIMIT = 1 << 52


class AccumulatorError(ValueError):
    pass


@dataclass(frozen=True)
class AccumulatorBound:
    layer: str
    worst_case: int        # magnitude bound from bit widths only
    l1: int                # data-dependent bound (equals worst_case for layers without weights)
    fan_in: int

    @property
    def worst_case_bits(self) -> int:
        return bits_for_magnitude(self.worst_case)

    @property
    def l1_bits(self) -> int:
        return bits_for_magnitude(self.l1)

    @property
    def bits(self) -> int:
        """Accumulator bits the layer needs (the tighter of the two proofs)."""
        return min(self.worst_case_bits, self.l1_bits)

    @property
    def decided_by(self) -> str:
        return "l1" if self.l1_bits < self.worst_case_bits else "worst-case"

    @property
    def dtype(self) -> str:
        """The accumulator dtype of the integer graph's default (wide) policy."""
        return accumulator_dtype(min(self.worst_case, self.l1))

    def check_simulation_exact(self):
        if min(self.worst_case, self.l1) >= SIM_EXACT_LIMIT:
            raise AccumulatorError(
                f"layer {self.layer}: accumulator needs {self.bits} bits (> 52); float64 simulation would not "
                "be exact. Use fewer weight/activation bits for this layer.")

    def to_json(self) -> dict:
        return {"worst_case_bits": self.worst_case_bits, "l1_bits": self.l1_bits, "bits": self.bits,
                "decided_by": self.decided_by, "dtype": self.dtype, "fan_in": self.fan_in}


INT16_LIMIT = 1 << 15
ACCUMULATOR_POLICIES = ("wide", "narrow")


def accumulator_dtype(bound: int, policy: str = "wide") -> str:
    """The accumulator dtype a proven magnitude ``bound`` allows: int16 below ``2**15`` under the ``narrow``
    policy, int32 below ``INT32_LIMIT``, else int64; beyond 52 bits no dtype (the float64 simulation would not
    be exact).  The one place the integer graph's accumulator widths are decided."""
    if policy not in ACCUMULATOR_POLICIES:
        raise ValueError(f"accumulator policy must be one of {ACCUMULATOR_POLICIES}, got {policy!r}")
    if bound >= SIM_EXACT_LIMIT:
        raise AccumulatorError(f"accumulator bound 2**{int(np.log2(bound))} exceeds 52 bits")
    if policy == "narrow" and bound < INT16_LIMIT:
        return "int16"
    return "int32" if bound < INT32_LIMIT else "int64"


MAX_TILES = 8       # more tiles than this: plain int32 (each tile is a kernel call)
MIN_K = 32          # fewer products per tile than this: plain int32 (widening would dominate)


@dataclass(frozen=True)
class KTiles:
    """k-tiled int16 accumulation of one weighted layer: its input channels split into ``ranges``; each
    range's products are summed in int16 (``tile_bound`` < 2**15 proves it cannot overflow, whatever the order)
    and the partial sums are widened to int32 and added (the layer's full bound < 2**30 proves that)."""

    ranges: tuple          # ((c0, c1), ...) input-channel ranges
    k: int                 # most products summed in int16 before widening (range length * kernel area)
    tile_bound: int

    def to_json(self) -> dict:
        return {"tiles": len(self.ranges), "k": self.k, "tile_bound": self.tile_bound,
                "tile_bits": bits_for_magnitude(self.tile_bound)}


def k_tiles(x_max: int, wq: np.ndarray, kind: str, groups: int = 1, max_tiles: int = MAX_TILES) -> KTiles | None:
    """Input-channel ranges whose int16 partial sums provably cannot overflow (greedy, in channel order), or
    None when one channel alone could overflow int16, the layer is grouped, or more than ``max_tiles`` would be
    needed.  ``wq``: stored weights (conv2d ``(O, I, kh, kw)``, matmul ``(K, N)``); ``x_max``: the largest
    stored input magnitude.  Per output channel ``o`` the bound of a range ``R`` is ``x_max * sum_{i in R}
    sum_k |wq[o, i, k]|`` (the L1 proof restricted to the range)."""
    if groups != 1:
        return None
    a = np.abs(wq.astype(np.int64))
    contrib = a.reshape(a.shape[0], a.shape[1], -1).sum(axis=2) if kind == "conv2d" else a.T   # (O, I)
    area = 1 if kind != "conv2d" else int(np.prod(wq.shape[2:]))
    ranges, start, run, best = [], 0, np.zeros(contrib.shape[0], np.int64), 0
    for i in range(contrib.shape[1]):
        nxt = run + contrib[:, i]
        if x_max * int(nxt.max(initial=0)) < INT16_LIMIT:
            run = nxt
            continue
        if i == start:
            return None            # this channel alone could overflow int16
        ranges.append((start, i))
        best = max(best, x_max * int(run.max(initial=0)))
        start, run = i, contrib[:, i].copy()
        if x_max * int(run.max(initial=0)) >= INT16_LIMIT:
            return None
    ranges.append((start, contrib.shape[1]))
    best = max(best, x_max * int(run.max(initial=0)))
    k = max(c1 - c0 for c0, c1 in ranges) * area
    if len(ranges) > max_tiles or k < MIN_K:
        return None
    return KTiles(tuple(ranges), k, best)


def weight_l1_per_channel(wq: np.ndarray, axis: int) -> np.ndarray:
    """sum |Wq| over everything but the output-channel axis."""
    a = np.abs(wq.astype(np.int64))
    return np.moveaxis(a, axis, 0).reshape(a.shape[axis], -1).sum(axis=1)


def bias_at_accumulator(bias_q: np.ndarray, bias_fmt: FixedPointFormat, acc_frac: np.ndarray) -> np.ndarray:
    """Stored bias integers shifted left to the accumulator scale (exact; bias frac <= accumulator frac)."""
    shift = np.asarray(acc_frac, dtype=np.int64).reshape(-1) - np.asarray(bias_fmt.frac_list, dtype=np.int64)
    if np.any(shift < 0):
        raise AccumulatorError("bias has more fractional bits than the accumulator")
    return bias_q.astype(np.int64) << np.broadcast_to(shift, bias_q.shape)


def weighted_layer_bound(name: str, x_fmt: FixedPointFormat, wq: np.ndarray, w_fmt: FixedPointFormat,
                         w_axis: int, fan_in: int, bias_acc: np.ndarray | None) -> AccumulatorBound:
    X = x_fmt.max_abs_q
    b = 0 if bias_acc is None else np.abs(bias_acc).astype(np.int64)
    worst = X * fan_in * w_fmt.max_abs_q + int(np.max(b, initial=0))
    l1 = int(np.max(X * weight_l1_per_channel(wq, w_axis) + b))
    return AccumulatorBound(name, int(worst), l1, fan_in)


def formats_bound(layer, x_fmt: FixedPointFormat, w_fmt: FixedPointFormat, b_fmt: FixedPointFormat | None,
                  proof: str = "l1") -> int:
    """The proven accumulator magnitude of a weighted ``layer`` (``tvm_fxp.layer_graph.Layer``) under per-tensor
    input, weight and bias formats (``b_fmt`` None: no bias): ``proof`` ``"l1"`` or ``"worst-case"``."""
    bias_acc = None
    if b_fmt is not None:
        bias_acc = bias_at_accumulator(b_fmt.quantize(layer.bias), b_fmt,
                                       np.full(layer.channels, x_fmt.frac + w_fmt.frac))
    b = weighted_layer_bound(layer.name, x_fmt, w_fmt.quantize(layer.weight), w_fmt, layer.weight_axis,
                             layer.fan_in, bias_acc)
    return b.worst_case if proof == "worst-case" else b.l1


def prove_accumulator(layer, x_fmt: FixedPointFormat, w_fmt: FixedPointFormat, b_fmt: FixedPointFormat | None,
                      acc_bits: int, proof: str = "l1", tiles: KTiles | None = None) -> AccumulatorProof:
    """The plan's record (``Plan.proofs``) of a claim that ``layer``'s accumulator fits ``acc_bits``: the whole
    reduction's bound by ``proof``, or, with ``tiles`` (``k_tiles``), the per-tile claim (the whole bound then
    by L1).  It records what was proven; ``Realize`` checks it against the weights it is given."""
    bound = formats_bound(layer, x_fmt, w_fmt, b_fmt, "l1" if tiles is not None else proof)
    if tiles is None:
        return AccumulatorProof(x_fmt.bits, w_fmt.bits, acc_bits, proof, int(bound))
    return AccumulatorProof(x_fmt.bits, w_fmt.bits, acc_bits, "l1 per k-tile", int(bound), len(tiles.ranges),
                            int(tiles.k), int(tiles.tile_bound))


def aligned_sum_bound(name: str, fmts: list, acc_frac: int, terms_per_input: int = 1,
                      multiplier: int = 1) -> AccumulatorBound:
    """Bound for adds/concats/pools: inputs shifted left to ``acc_frac`` then summed."""
    total = 0
    for f in fmts:
        total += (f.max_abs_q << (acc_frac - f.frac)) * terms_per_input
    total *= multiplier
    return AccumulatorBound(name, int(total), int(total), terms_per_input)


def pool_multiplier(count: int) -> tuple[int, int]:
    """Integer ``m`` and shift ``s`` with ``m / 2**s`` ~ ``1 / count`` (exact when count is a power of 2)."""
    if count & (count - 1) == 0:
        return 1, count.bit_length() - 1
    s = 15 + (count - 1).bit_length()
    return int(round((1 << s) / count)), s


@dataclass(frozen=True)
class LayerArithmetic:
    """The integer arithmetic of one layer under a plan: quantized operands, scales and the bound."""

    name: str
    acc_frac: np.ndarray           # per output channel (1-D) or scalar (0-D)
    bound: AccumulatorBound
    wq: np.ndarray | None = None
    bias_acc: np.ndarray | None = None
    pool: tuple | None = None      # (count, m, s) for avgpool/mean


def layer_arithmetic(layer, plan, input_fmts: list) -> LayerArithmetic:
    """Quantize a layer's constants under ``plan`` and prove its accumulator bound.

    ``layer`` is a ``tvm_fxp.layer_graph.Layer``; ``input_fmts`` the formats of its inputs.
    Raises AccumulatorError / FormatError naming the layer when the plan cannot be realized exactly.
    """
    if layer.weight is not None:
        x_fmt = input_fmts[0]
        if x_fmt.per_channel:
            raise PlanError(f"{layer.name}: input activation format must be per-tensor")
        w_fmt = plan[layer.weight_key]
        if w_fmt.per_channel and (len(w_fmt.frac) != layer.channels or w_fmt.axis != layer.weight_axis):
            raise PlanError(f"{layer.weight_key}: per-channel format needs {layer.channels} fracs on axis "
                            f"{layer.weight_axis}, got {len(w_fmt.frac)} on axis {w_fmt.axis}")
        wq = w_fmt.quantize(layer.weight)
        acc_frac = x_fmt.frac + np.asarray(w_fmt.frac_list, dtype=np.int64)
        bias_acc = None
        if layer.bias is not None:
            b_fmt = plan[layer.bias_key]
            if b_fmt.per_channel and len(b_fmt.frac) != layer.channels:
                raise PlanError(f"{layer.bias_key}: per-channel format needs {layer.channels} fracs")
            over = np.asarray(b_fmt.frac_list) > acc_frac
            if np.any(over):
                raise PlanError(f"{layer.bias_key}: frac {max(b_fmt.frac_list)} exceeds the accumulator's "
                                f"{int(np.min(acc_frac))} (bias is added at accumulator scale; lower its frac)")
            bias_acc = bias_at_accumulator(b_fmt.quantize(plan.corrected_bias(layer.name, layer.bias)), b_fmt,
                                           np.broadcast_to(acc_frac, (layer.channels,)))
        effective = wq * w_fmt.multiplier_array(wq.ndim)   # cluster multipliers scale the products
        bound = weighted_layer_bound(layer.name, x_fmt, effective, w_fmt, layer.weight_axis, layer.fan_in, bias_acc)
        bound.check_simulation_exact()
        return LayerArithmetic(layer.name, acc_frac if w_fmt.per_channel else acc_frac.reshape(()),
                               bound, wq, bias_acc)
    for f in input_fmts:
        if f.per_channel:
            raise PlanError(f"{layer.name}: input activation formats must be per-tensor")
    if layer.op in ("add", "concat"):
        acc = max(f.frac for f in input_fmts)
        if layer.op == "add":
            bound = aligned_sum_bound(layer.name, input_fmts, acc)
        else:
            bound = max((aligned_sum_bound(layer.name, [f], acc) for f in input_fmts), key=lambda b: b.l1)
        bound.check_simulation_exact()
        return LayerArithmetic(layer.name, np.asarray(acc), bound)
    if layer.op in ("avgpool", "mean"):
        count = layer.pool_count
        m, s = pool_multiplier(count)
        bound = aligned_sum_bound(layer.name, input_fmts, input_fmts[0].frac, count, m)
        bound.check_simulation_exact()
        return LayerArithmetic(layer.name, np.asarray(input_fmts[0].frac + s), bound, pool=(count, m, s))
    rule = EXTRA_ARITHMETIC.get(layer.op)
    if rule is not None:
        return rule(layer.name, input_fmts, layer.attrs)
    raise PlanError(f"{layer.name}: no integer arithmetic for op {layer.op}")


# ---- the products of two activations, local response normalisation, float islands --------------------------

LRN_INDEX_BITS = 16      # at most 2**16 table entries
LRN_TABLE_BITS = 15      # table values below 2**15


@dataclass(frozen=True)
class LrnTable:
    """``d(S) = (bias + alpha/size * S) ** -beta`` tabulated over the integer sum of squares ``s``.

    With input integers ``q`` at ``2**-f`` (``|q| <= X``), ``s = sum_window q**2`` is at most
    ``sum_bound = size * X**2`` and means ``S = s * 2**(-2f)``.  Entry ``i`` covers ``s`` in
    ``[i * 2**shift, (i+1) * 2**shift)`` and holds ``round(2**frac * d(S_mid))``; the LRN output is
    ``q * table[s >> shift]`` at ``2**-(f + frac)``.
    """

    table: np.ndarray              # int64
    shift: int
    frac: int
    sum_bound: int


def lrn_table(fmt: FixedPointFormat, attrs: dict) -> LrnTable:
    size, alpha, beta, bias = attrs["size"], attrs["alpha"], attrs["beta"], attrs["bias"]
    smax = size * fmt.max_abs_q ** 2
    shift = max(0, smax.bit_length() - LRN_INDEX_BITS)
    i = np.arange((smax >> shift) + 1, dtype=np.float64)
    s_mid = i * 2.0 ** shift + (2.0 ** shift - 1) / 2
    d = (bias + alpha / size * np.ldexp(s_mid, -2 * fmt.frac)) ** -beta
    frac = math.floor(math.log2(((1 << LRN_TABLE_BITS) - 1) / bias ** -beta))
    return LrnTable(round_half_away(np.ldexp(d, frac)).astype(np.int64), shift, frac, smax)


def mul_arithmetic(name: str, fmts: list, attrs: dict | None = None):
    """``a * b`` of stored integers: the product is at ``f_a + f_b``, magnitude at most ``|a|max * |b|max``."""
    a, b = fmts
    bound = a.max_abs_q * b.max_abs_q
    acc = AccumulatorBound(name, bound, bound, 1)
    acc.check_simulation_exact()
    return LayerArithmetic(name, np.asarray(a.frac + b.frac), acc)


def lrn_arithmetic(name: str, fmts: list, attrs: dict):
    """``q * T[s >> r]`` (see ``lrn_table``): at ``f_x + K``, magnitude at most ``|q|max * max T``;
    the sum of squares ``s`` itself must stay below ``2**52`` for the float64 simulation."""
    (x,) = fmts
    t = lrn_table(x, attrs)
    if t.sum_bound >= 1 << 52:
        raise AccumulatorError(f"layer {name}: the LRN sum of squares needs more than 52 bits; "
                               "use fewer bits for its input")
    bound = x.max_abs_q * int(t.table.max())
    acc = AccumulatorBound(name, bound, bound, attrs["size"])
    acc.check_simulation_exact()
    return LayerArithmetic(name, np.asarray(x.frac + t.frac), acc)


def float_island_arithmetic(name: str, fmts: list, attrs: dict):
    """A float island has no accumulator: its output is quantized from float64 by its own format."""
    (x,) = fmts
    return LayerArithmetic(name, np.asarray(x.frac), AccumulatorBound(name, x.max_abs_q, x.max_abs_q, 1))


def max_min_arithmetic(name: str, fmts: list, attrs: dict | None = None) -> LayerArithmetic:
    """Elementwise ``maximum``/``minimum`` of activations: operands shifted left to the finest scale among them
    (exact), compared; the result is one of the aligned operands."""
    acc = max(f.frac for f in fmts)
    bound = max((aligned_sum_bound(name, [f], acc) for f in fmts), key=lambda b: b.l1)
    bound.check_simulation_exact()
    return LayerArithmetic(name, np.asarray(acc), bound)


# Layer kinds whose arithmetic is not a sum of products; the passes register more (``table``: lookup tables,
# ``tvm_fxp.passes.table``, whose tables are built from the matched Relax functions).
EXTRA_ARITHMETIC = {"mul": mul_arithmetic, "lrn": lrn_arithmetic, "float": float_island_arithmetic,
                    "max": max_min_arithmetic, "min": max_min_arithmetic}
