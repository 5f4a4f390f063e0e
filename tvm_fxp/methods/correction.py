"""Label-free bias correction: the post-training correction step of FxP-QNet (usable after any method).

Quantizing weights and activations shifts the mean of every layer's output: rounding and clipping errors do
not average out per channel.  For each weighted layer with a bias, in topological order, the correction
measures the mean of the layer's conv/matmul output per channel (before the bias) in the simulation of the
plan, with every earlier correction applied, and in the float model, on the same unlabelled images, and adds
the difference to the bias (``Plan.bias_correction``), re-deriving the bias format when the corrected bias
needs a wider range.  Both means come from the search's compiled simulation (``PlanScorer.layer_means``):
one run per layer, no labels.  The corrected plan is kept only when the label-free network error against the
float model (``1 - agreement + KL``) does not grow, the agreement does not fall, and its drop stays within
``max_drop``.
"""

from __future__ import annotations

import numpy as np

from ..formats import FixedPointFormat, frac_for_range
from ..plan import Plan
from .evaluate import accumulator_frac


def network_error(score) -> float:
    return (1.0 - score.agreement) + score.kl


def _bias_format(lg, plan: Plan, layer, corrected: np.ndarray) -> FixedPointFormat:
    """The bias format, its range widened if the corrected bias needs it (never finer than the accumulator)."""
    fmt = plan[layer.bias_key]
    amax = float(np.abs(corrected).max(initial=0))
    if fmt.per_channel or amax <= fmt.max_abs_q * 2.0 ** -fmt.frac:
        return fmt
    frac = min(frac_for_range(amax, fmt.bits, True), accumulator_frac(lg, plan, layer))
    return FixedPointFormat(fmt.bits, frac, True)


def corrected_plan(lg, plan: Plan, sim, inputs) -> Plan:
    """``plan`` with every weighted layer's bias corrected, in topological order (no acceptance test):
    ``sim`` is a ``PlanScorer`` (or any simulator with ``layer_means``), ``inputs`` unlabelled images."""
    x = inputs
    reference = sim.layer_means(None, x)
    current = plan
    for layer in lg.layers.values():
        if layer.weight is None or layer.bias is None or layer.name not in reference:
            continue
        measured = sim.layer_means(current, x)[layer.name]
        delta = (reference[layer.name] - measured).reshape(-1)
        if delta.size != layer.bias.size:
            continue                       # a bias broadcast differently from the channel axis: leave it
        corrections = dict(current.bias_correction)
        corrections[layer.name] = [float(v) for v in delta]
        trial = Plan(current.tensors, current.method, current.config, current.model, {}, corrections,
                     current.proofs)
        fmt = _bias_format(lg, trial, layer, trial.corrected_bias(layer.name, layer.bias))
        current = trial.with_format(layer.bias_key, fmt)
    return current


def correct_biases(lg, plan: Plan, evaluate, max_drop: float | None = None) -> tuple[Plan, dict]:
    """``(plan with bias corrections, report)``; the plan is returned unchanged when the correction does not
    reduce the network error (report ``applied: False``)."""
    before = evaluate(plan, limited=False)
    current = corrected_plan(lg, plan, evaluate.sim, evaluate.inputs)
    after = evaluate(current, limited=False)
    drop = 1.0 - after.agreement
    applied = (network_error(after) <= network_error(before) and after.agreement >= before.agreement
               and (max_drop is None or drop <= max_drop))
    report = {"applied": bool(applied), "layers": len(current.bias_correction),
              "agreement_before": round(before.agreement, 5), "agreement_after": round(after.agreement, 5),
              "kl_before": round(before.kl, 6), "kl_after": round(after.kl, 6)}
    return (current if applied else plan), report
