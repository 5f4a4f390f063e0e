"""Costs of a plan: memory, multiply cost and accumulator widths (no TVM)."""

from __future__ import annotations

import numpy as np

from .plan import Plan

FLOAT_BITS = 32


def plan_costs(q) -> dict:
    """Memory and multiply-cost figures of a bound plan (anything with ``graph``, ``plan`` and ``arithmetic``,
    e.g. ``tvm_fxp.api.Quantized``)."""
    lg, plan = q.graph, q.plan
    weight_bits = weight_elems = act_bits = act_elems = 0
    for key, (kind, _, shape) in lg.tensors().items():
        n = int(np.prod(shape))
        if kind in ("weight", "bias"):
            weight_bits += n * plan[key].bits
            weight_elems += n
        else:
            act_bits += n * plan[key].bits
            act_elems += n
    cost = cost8 = 0
    for layer in lg.layers.values():
        if layer.weight is None:
            continue
        wx = plan[lg.layers[layer.inputs[0]].output_key].bits
        cost += layer.macs * wx * plan[layer.weight_key].bits
        cost8 += layer.macs * 64
    bounds = [a.bound for a in q.arithmetic.values()]
    return {
        "weight_bits": int(weight_bits),
        "activation_bits": int(act_bits),
        "float_weight_bits": int(weight_elems * FLOAT_BITS),
        "float_activation_bits": int(act_elems * FLOAT_BITS),
        "memory_reduction_vs_float": (weight_elems + act_elems) * FLOAT_BITS / max(weight_bits + act_bits, 1),
        "mult_cost_vs_8bit": cost / cost8 if cost8 else None,
        "max_accumulator_bits": max((b.bits for b in bounds), default=0),
        "macs_per_image": int(sum(l.macs for l in lg.layers.values())),
    }


def weight_bits(lg, plan: Plan) -> int:
    return sum(int(np.prod(shape)) * plan[k].bits for k, (kind, _, shape) in lg.tensors().items()
               if kind in ("weight", "bias"))


def total_bits(lg, plan: Plan) -> int:
    return sum(int(np.prod(shape)) * plan[k].bits for k, (_, _, shape) in lg.tensors().items())


def mult_cost(lg, plan: Plan) -> float:
    cost = ref = 0
    for layer in lg.layers.values():
        if layer.weight is not None:
            cost += layer.macs * plan[lg.layers[layer.inputs[0]].output_key].bits * plan[layer.weight_key].bits
            ref += layer.macs * 64
    return cost / ref if ref else 0.0
