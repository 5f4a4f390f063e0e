"""Mellempudi et al. 2017: dynamic fixed point with ternary or 4-bit weight clusters.

Each weighted layer's filters (output channels) are split into clusters of ``cluster`` consecutive
filters sharing one scale ``alpha``:

- ternary: threshold ``delta = 0.7 * mean|W|`` over the cluster, ``alpha = mean(|w| : |w| > delta)``; the
  weights become ``{-alpha, 0, +alpha}``;
- 4-bit: symmetric levels ``-7..7`` times ``alpha``, with ``alpha`` chosen to minimise the cluster's MSE.

The scale is realized as an integer multiplier and a shift, ``alpha ~ m * 2**-f`` with ``m`` an 8-bit
integer (``multiplier_bits``), so the integer graph accumulates ``x * t`` with ``t`` in ``{-1, 0, 1}``
(ternary: additions and subtractions) and multiplies once per output by the cluster's ``m`` before the
usual shift.  The levels are the format's own (symmetric 2-bit ternary levels / symmetric 4-bit), so a
weight maps to the nearest level: for ternary that puts the threshold at ``alpha / 2``, which for
bell-shaped filters lies close to the paper's ``0.7 * mean|W|`` (the measured gap is recorded per layer
in the plan's config).  Activations are 8-bit dynamic fixed point (the abstract's setting; ``act_bits``,
``--act-bits``, narrows them: with ternary weights and <= 4-bit unsigned activations an aarch64 build can run
the sums multiply-free, ``tvm_fxp.schedules.bitserial``); biases 16-bit at the accumulator scale.

The first and the last weighted layer keep ``first_last_bits``-bit per-channel weights (default 8; 0 clusters
them like the rest), as ternary-weight work commonly does: the paper's abstract does not say, and on our
reference models it is worth 0.3-1.9 points at N=4 4-bit (measured, bench/results/methods.json).  Their
multiplies count as not replaced.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from ..formats import FixedPointFormat
from ..plan import Plan
from .evaluate import clamp_biases, range_format
from .uniform import MethodError


@dataclass(frozen=True)
class Mellempudi2017:
    cluster: int = 4
    weights: str = "ternary"           # ternary | 4bit
    act_bits: int = 8
    bias_bits: int = 16
    multiplier_bits: int = 8
    first_last_bits: int = 8           # 0: the first and last weighted layers are clustered too
    name = "mellempudi2017"

    def __post_init__(self):
        if not 1 <= self.cluster <= 64:
            raise MethodError(f"mellempudi2017: --cluster must be in 1..64, got {self.cluster}")
        if self.weights not in ("ternary", "4bit"):
            raise MethodError(f"mellempudi2017: --weights must be 'ternary' or '4bit', got {self.weights!r}")
        if not 2 <= self.act_bits <= 16:
            raise MethodError(f"mellempudi2017: --act-bits must be in 2..16, got {self.act_bits}")
        if self.first_last_bits != 0 and not 2 <= self.first_last_bits <= 16:
            raise MethodError(f"mellempudi2017: --first-last-bits must be 0 or in 2..16, got {self.first_last_bits}")


def cluster_alpha(w: np.ndarray, kind: str) -> tuple[float, float]:
    """(alpha, paper threshold delta) of one cluster's weights."""
    a = np.abs(w.ravel().astype(np.float64))
    if kind == "ternary":
        delta = 0.7 * a.mean()
        big = a[a > delta]
        return (float(big.mean()) if big.size else float(a.max(initial=0))), float(delta)
    amax = float(a.max(initial=0))
    if amax == 0:
        return 0.0, 0.0
    cands = amax / 7 * np.linspace(0.5, 1.0, 26)
    errs = [np.mean((a - np.clip(np.floor(a / c + 0.5), 0, 7) * c) ** 2) for c in cands]
    return float(cands[int(np.argmin(errs))]), 0.0


def multiplier_and_shift(alpha: float, mbits: int) -> tuple[int, int]:
    """``m`` in ``[2**(mbits-1), 2**mbits)`` and ``f`` with ``m * 2**-f`` closest to ``alpha``."""
    if alpha <= 0:
        return 1, 0
    f = int(np.floor(np.log2((2 ** mbits - 0.5) / alpha)))
    m = int(round(alpha * 2.0 ** f))
    if m >= 2 ** mbits:
        f, m = f - 1, int(round(alpha * 2.0 ** (f - 1)))
    return max(m, 1), f


def weight_format(layer, config: Mellempudi2017) -> tuple[FixedPointFormat, dict]:
    w = np.moveaxis(layer.weight, layer.weight_axis, 0)
    channels = w.shape[0]
    fracs, mults, info = [], [], []
    for start in range(0, channels, config.cluster):
        alpha, delta = cluster_alpha(w[start:start + config.cluster], config.weights)
        m, f = multiplier_and_shift(alpha, config.multiplier_bits)
        n = min(config.cluster, channels - start)
        fracs += [f] * n
        mults += [m] * n
        info.append({"alpha": alpha, "delta": delta, "m": m, "f": f})
    bits = 2 if config.weights == "ternary" else 4
    fmt = FixedPointFormat(bits, tuple(fracs), True, layer.weight_axis, tuple(mults), symmetric=True)
    return fmt, {"clusters": len(info), "threshold_gap": float(np.mean(
        [abs(c["alpha"] / 2 - c["delta"]) / c["alpha"] for c in info if c["alpha"] > 0 and c["delta"] > 0] or [0.0]))}


def multiplies_replaced(lg, plan) -> float:
    """Share of the weighted layers' multiplies replaced by additions/subtractions (ternary weights)."""
    total = replaced = 0
    for layer in lg.layers.values():
        if layer.weight is None:
            continue
        total += layer.macs
        fmt = plan[layer.weight_key]
        if fmt.symmetric and fmt.bits == 2:
            outputs = int(np.prod(layer.out_shape))
            replaced += layer.macs - outputs   # one multiply by the cluster's m per output remains
    return replaced / total if total else 0.0


def allocate(lg, stats: dict, config: Mellempudi2017, evaluate=None) -> Plan:
    from .uniform import weight_format as plain_weight_format

    tensors, layers_info = {}, {}
    weighted = [layer.name for layer in lg.layers.values() if layer.weight is not None]
    kept = {weighted[0], weighted[-1]} if config.first_last_bits and weighted else set()
    for layer in lg.layers.values():
        tensors[layer.output_key] = range_format(lg, stats, layer.output_key, config.act_bits)
        if layer.name in kept:
            tensors[layer.weight_key] = plain_weight_format(layer.weight, config.first_last_bits, layer.weight_axis)
            layers_info[layer.name] = {"kept_bits": config.first_last_bits}
        elif layer.weight is not None:
            tensors[layer.weight_key], layers_info[layer.name] = weight_format(layer, config)
        if layer.bias is not None:
            tensors[layer.bias_key] = range_format(lg, stats, layer.bias_key, config.bias_bits)
    plan = clamp_biases(lg, Plan(tensors))   # a bias is never finer than its finest cluster's accumulator
    return Plan(plan.tensors, config.name, {**asdict(config), "layers": layers_info,
                                            "multiplies_replaced": multiplies_replaced(lg, plan)})

