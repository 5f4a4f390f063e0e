"""Goyal et al. 2021: layer-by-layer search of bit-width and fractional offset, cumulative, post-training.

In topological order, for each layer's weights, then bias, then output activation, find the smallest
bit-width in ``min_bits..max_bits`` (beyond, up to ``start_bits``, only when nothing smaller keeps
its limit) (and for it a fractional offset around the range-derived ``frac``, ``f0-2..f0+2``) such that the
accuracy with *everything already chosen applied* stays within the loss budget of the float model.
Tensors not chosen yet stay at ``start_bits`` (16: close to float).  Ignoring the other layers'
quantization is what loses up to 50% in the paper; here every evaluation includes all earlier choices.

How the budget is spread over the tensors is ours (``budget_schedule``): with the whole budget open to every
choice, the first tensors spend it (measured on fmnist_resnet: the input and the first layer's three tensors
left 0.7 of the 1 point; conv2d_4's output and conv2d_5's weights then stayed at 16 bits, 58% multiply-cost
saving against the paper's 77.5%).  Each tensor's choice may instead leave at most ``budget`` times the
running sum of the tensors' shares of the costs the paper trades bits for -- memory (elements) and
multiply cost (the MACs a tensor takes part in), weighted ``1 - mult_share`` and ``mult_share`` -- so the
tensors that cost most get most of the budget, and what a choice leaves unspent stays for the next.

The smallest passing width is found by bisection over ``min_bits..max_bits`` (accuracy is close to monotone
in bit-width); a probed width passes when some offset keeps the limit (offsets are tried nearest first and
the probe stops at the first that passes), and at the chosen width every offset is scored and the most
accurate kept.

A check split (``evaluate.check``: other images than the search's; the CLI's is the next 2,000 validation
images): every choice accepted at the edge of its limit on the same search images overfits them (measured:
1.3 points more loss on unseen images than on the search's after 31 choices), so each choice is confirmed on the
check split as well -- the chosen plan must keep the limit there too, else the tensor is widened one bit at a
time (its offset chosen on the search images again) until it does.  The check split only accepts or rejects one
candidate per width; no choice among candidates is made on it.  The search honours a time limit and returns
the best plan so far (remaining tensors at ``start_bits``, as every accepted choice was evaluated).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from ..plan import Plan
from .evaluate import SearchTimeout, clamp_biases, range_format, search_order, uniform_plan
from .uniform import MethodError


@dataclass(frozen=True)
class Goyal2021:
    budget: float = 0.01          # accuracy-loss budget (fraction: 0.01 = 1 point)
    min_bits: int = 2
    max_bits: int = 8
    start_bits: int = 16
    offsets: tuple = (-2, -1, 0, 1, 2)
    split: str = "cost"           # how the budget is spread over the tensors (see ``budget_schedule``)
    mult_share: float = 0.5       # with split="cost": the multiply cost's weight in a tensor's share (memory: the rest)
    name = "goyal2021"
    check_split = True            # each choice confirmed on a check split when the data has one (the CLI's)

    def __post_init__(self):
        if not 2 <= self.min_bits <= self.max_bits <= 16:
            raise MethodError(f"goyal2021: need 2 <= min_bits <= max_bits <= 16, got {self.min_bits}..{self.max_bits}")
        if not 0 <= self.budget < 1:
            raise MethodError(f"goyal2021: budget must be a fraction in [0, 1), got {self.budget}")
        if self.split not in ("cost", "none"):
            raise MethodError(f"goyal2021: split must be 'cost' or 'none', got {self.split!r}")


def budget_schedule(lg, config: Goyal2021) -> dict:
    """The loss each tensor's choice may leave, in search order: ``budget`` times the running sum of the
    tensors' shares of the costs the paper trades bits for (ours: half memory -- the tensor's elements over all
    elements -- and half multiply cost -- the MACs it takes part in, as weight or as input activation, over
    twice all MACs).  The last tensor's is the whole budget.  ``split="none"``: every tensor may spend the whole
    budget (the first tensors then spend it, and the expensive tensors after them stay wide)."""
    keys = search_order(lg)
    if config.split == "none":
        return {k: config.budget for k in keys}
    tensors = lg.tensors()
    elems = {k: int(np.prod(tensors[k][2])) for k in keys}
    macs = dict.fromkeys(keys, 0)
    for layer in lg.layers.values():
        if layer.weight is not None:
            macs[layer.weight_key] += layer.macs
            macs[lg.layers[layer.inputs[0]].output_key] += layer.macs
    total_elems, total_macs = sum(elems.values()), max(sum(macs.values()), 1)
    out, running = {}, 0.0
    for k in keys:
        running += (1 - config.mult_share) * elems[k] / total_elems + config.mult_share * macs[k] / total_macs
        out[k] = config.budget * min(running, 1.0)
    out[keys[-1]] = config.budget
    return out


def _candidates(lg, stats, plan: Plan, key: str, bits: int, offsets) -> list:
    """Plans with ``key`` at ``bits`` and each offset; a bias may not exceed its accumulator's frac."""
    out = []
    for off in offsets:
        fmt = range_format(lg, stats, key, bits, off)
        trial = clamp_biases(lg, plan.with_format(key, fmt))
        if key.endswith(".bias") and trial[key] != fmt and off > 0:
            continue  # clamped to the same format as a smaller offset
        out.append(trial)
    return out


def allocate(lg, stats: dict, config: Goyal2021, evaluate) -> Plan:
    if evaluate is None:
        raise MethodError("goyal2021 needs evaluation data (an accuracy budget is searched)")
    plan = uniform_plan(lg, stats, config.start_bits)
    schedule = budget_schedule(lg, config)
    check = getattr(evaluate, "check", None)
    chosen = set()
    trace = []
    try:
        for key in search_order(lg):
            # the loss this choice may leave: the schedule's, or the loss already there when an earlier
            # tensor could not keep its own (then this one may not add to it)
            limit = max(schedule[key], evaluate.loss(plan))
            check_limit = None if check is None else max(schedule[key], check.loss(plan))
            plan = _smallest_passing(lg, stats, plan, key, config, evaluate, limit, check_limit)
            chosen.add(key)
            trace.append({"tensor": key, "bits": plan[key].bits, "frac": plan[key].frac,
                          "allowed": round(limit, 5), "loss": round(evaluate.loss(plan), 5)})
            if check is not None:
                trace[-1]["check_loss"] = round(check.loss(plan), 5)
    except SearchTimeout:
        # the best plan so far: chosen tensors keep their choice, the rest stay at start_bits (the plan
        # every accepted choice was evaluated with)
        trace.append({"timeout": True, "chosen": len(chosen)})
    plan = Plan(plan.tensors, config.name, {**asdict(config), "offsets": list(config.offsets),
                                            "trace": trace, "evaluations": evaluate.evaluations,
                                            "check_evaluations": check.evaluations if check else None})
    return plan


def _smallest_passing(lg, stats, plan, key, config, evaluate, limit, check_limit) -> Plan:
    order = sorted(config.offsets, key=lambda o: (abs(o), o))    # the range-derived frac first

    def passes(bits) -> bool:
        """Whether some offset keeps the limit at ``bits`` (stops at the first that does)."""
        return any(evaluate.loss(t) <= limit for t in _candidates(lg, stats, plan, key, bits, order))

    def best_at(bits):
        trials = _candidates(lg, stats, plan, key, bits, config.offsets)
        return min(trials, key=lambda p: (evaluate.loss(p), -p[key].frac))

    lo, hi = config.min_bits, config.max_bits
    if not passes(hi):
        # even max_bits breaks the limit (often the logits, where coarse steps create argmax ties):
        # widen this tensor beyond max_bits, up to start_bits, rather than break it
        lo, hi = config.max_bits + 1, config.start_bits
        if not passes(hi):
            return best_at(hi)
    while lo < hi:
        mid = (lo + hi) // 2
        if passes(mid):
            hi = mid
        else:
            lo = mid + 1
    best = best_at(hi)     # the smallest passing width, with its most accurate offset
    check = getattr(evaluate, "check", None)
    if check is None:
        return best
    while check.loss(best) > check_limit and hi < config.start_bits:
        hi += 1            # confirmed on the check split, else one bit wider
        best = best_at(hi)
    return best
