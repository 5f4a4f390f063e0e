"""Uniform dynamic fixed point: every tensor ``bits`` wide, ``frac`` from its calibrated range.

The baseline the other methods are compared with.  Activations whose calibrated minimum is >= 0 (after
relu, and a [0, 1] image input) are unsigned; weights and biases are signed.  A bias gets the frac its range
allows, but never more than its layer's accumulator (``f_x + f_w``), since it is added at that scale.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from ..formats import FixedPointFormat, frac_for_range
from ..plan import Plan

MIN_BITS, MAX_BITS = 2, 16


class MethodError(ValueError):
    pass


@dataclass(frozen=True)
class Uniform:
    """All tensors ``bits`` wide (2..16)."""

    bits: int = 8
    per_channel_weights: bool = False
    name = "uniform"

    def __post_init__(self):
        if isinstance(self.bits, bool) or not isinstance(self.bits, int) or not MIN_BITS <= self.bits <= MAX_BITS:
            raise MethodError(f"uniform: --bits must be an integer in {MIN_BITS}..{MAX_BITS}, got {self.bits!r}")


def activation_format(stats, bits: int) -> FixedPointFormat:
    signed = stats.min < 0
    return FixedPointFormat(bits, frac_for_range(stats.abs_max, bits, signed), signed)


def weight_format(w: np.ndarray, bits: int, axis: int | None) -> FixedPointFormat:
    if axis is None:
        return FixedPointFormat(bits, frac_for_range(float(np.abs(w).max(initial=0)), bits, True), True)
    cam = np.moveaxis(np.abs(w), axis, 0).reshape(w.shape[axis], -1).max(axis=1)
    return FixedPointFormat(bits, tuple(frac_for_range(cam, bits, True).tolist()), True, axis)


def bias_format(bias: np.ndarray, bits: int, acc_frac) -> FixedPointFormat:
    acc = np.asarray(acc_frac).reshape(-1)
    if acc.size > 1:
        f = np.minimum(frac_for_range(np.abs(bias), bits, True), acc)
        return FixedPointFormat(bits, tuple(int(v) for v in f), True, 0)
    f = min(frac_for_range(float(np.abs(bias).max(initial=0)), bits, True), int(acc.min()))
    return FixedPointFormat(bits, int(f), True)


def allocate(lg, stats: dict, config: Uniform, evaluate=None) -> Plan:
    bits = config.bits
    tensors = {}
    for layer in lg.layers.values():
        tensors[layer.output_key] = activation_format(stats[layer.output_key], bits)
        if layer.weight is not None:
            x_fmt = tensors[lg.layers[layer.inputs[0]].output_key]
            w_fmt = weight_format(layer.weight, bits, layer.weight_axis if config.per_channel_weights else None)
            tensors[layer.weight_key] = w_fmt
            if layer.bias is not None:
                acc = x_fmt.frac + np.asarray(w_fmt.frac_list)
                tensors[layer.bias_key] = bias_format(layer.bias, bits, acc)
    return Plan(tensors, method=config.name, config=asdict(config))
