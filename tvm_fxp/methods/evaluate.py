"""What the search methods share: scoring plans against the float model, costs, and the time limit.

``Evaluator(plan) -> Score`` runs a candidate plan on fixed inputs through the parametric simulation
(``tvm_fxp.passes.search``: compiled once, formats fed at run time) and compares it with the float model:
top-1 on labels when there are labels, and always the label-free agreement and KL divergence with the
float model's own predictions (self-distillation, no labels needed).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from ..formats import FixedPointFormat, frac_for_range
from ..plan import Plan
from ..report import agreement, top1


@dataclass(frozen=True)
class Score:
    top1: float | None
    agreement: float
    kl: float

    def quality(self, use_labels: bool) -> float:
        """The number a budget is measured on: top-1 when labelled, else agreement with float."""
        return self.top1 if use_labels and self.top1 is not None else self.agreement


def _log_softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def kl_divergence(float_logits, q_logits) -> float:
    p = _log_softmax(float_logits.astype(np.float64))
    q = _log_softmax(q_logits.astype(np.float64))
    return float(np.mean(np.sum(np.exp(p) * (p - q), axis=1)))


class SearchTimeout(Exception):
    pass


@dataclass
class Evaluator:
    """Score plans of one model on ``inputs`` (and ``labels``), with a cache and an optional time limit."""

    prepared: object
    graph: object
    template: Plan
    inputs: np.ndarray
    labels: np.ndarray | None = None
    time_limit: float | None = None
    use_labels: bool = True
    progress: object = None                  # a tqdm bar, updated once per evaluation
    max_evaluations: int | None = None       # a machine-independent budget (tests); None: unlimited
    _cache: dict = field(default_factory=dict)

    def __post_init__(self):
        from ..api import Runner, build
        from ..passes.search import PlanEvaluator, flat_outputs

        self.sim = PlanEvaluator(self.prepared, self.template)
        self.float_out = flat_outputs(Runner(build(self.prepared)).run(self.inputs))
        self.started = time.time()          # the limit is the search's: compiling the scorer is not counted
        self.float_top1 = top1(self.float_out, self.labels)
        if self.labels is None:
            self.use_labels = False
        self.evaluations = 0

    @property
    def reference(self) -> float:
        """Float model's quality on the same measure as ``Score.quality``."""
        return self.float_top1 if self.use_labels else 1.0

    def out_of_time(self) -> bool:
        return (self.time_limit is not None and time.time() - self.started > self.time_limit) or \
            (self.max_evaluations is not None and self.evaluations >= self.max_evaluations)

    def __call__(self, plan: Plan, limited: bool = True) -> Score:
        """The plan's score; ``limited=False``: even after the limit (a search's closing steps, counted)."""
        key = (tuple(sorted((k, f.bits, f.frac, f.signed) for k, f in plan.tensors.items())),
               tuple(sorted((k, tuple(v)) for k, v in plan.bias_correction.items())))
        if key in self._cache:
            return self._cache[key]
        if limited and self.out_of_time():
            raise SearchTimeout()
        out = self.sim.outputs(plan, self.inputs)
        score = Score(top1(out, self.labels), agreement(self.float_out, out), kl_divergence(self.float_out, out))
        self._cache[key] = score
        self.evaluations += 1
        if self.progress is not None:
            self.progress.update(1)
            self.progress.set_postfix(q=f"{score.quality(self.use_labels):.4f}")
        return score

    def loss(self, plan: Plan) -> float:
        """Quality lost against float (points are fractions: 0.01 = one point)."""
        return self.reference - self(plan).quality(self.use_labels)


# ---- shared format helpers --------------------------------------------------------------------------

def tensor_range(lg, stats, key) -> tuple[float, bool]:
    """(abs max, signed) of a tensor: weights/biases from their values, activations from calibration."""
    kind, layer, _ = lg.tensors()[key]
    if kind == "weight":
        return float(np.abs(lg.layers[layer].weight).max(initial=0)), True
    if kind == "bias":
        return float(np.abs(lg.layers[layer].bias).max(initial=0)), True
    s = stats[key]
    return s.abs_max, s.min < 0


def range_format(lg, stats, key, bits: int, offset: int = 0) -> FixedPointFormat:
    amax, signed = tensor_range(lg, stats, key)
    return FixedPointFormat(bits, frac_for_range(amax, bits, signed) + offset, signed)


def accumulator_frac(lg, plan: Plan, layer) -> int:
    """Smallest accumulator frac of a weighted layer under ``plan`` (the bias may not be finer)."""
    x = plan[lg.layers[layer.inputs[0]].output_key]
    return x.frac + min(plan[layer.weight_key].frac_list)


def clamp_biases(lg, plan: Plan) -> Plan:
    """Lower every bias frac to its accumulator's (a bias is added at the accumulator scale)."""
    tensors = dict(plan.tensors)
    for layer in lg.layers.values():
        if layer.bias is None:
            continue
        b = tensors[layer.bias_key]
        acc = accumulator_frac(lg, Plan(tensors), layer)
        if not b.per_channel and b.frac > acc:
            tensors[layer.bias_key] = FixedPointFormat(b.bits, acc, b.signed)
    return Plan(tensors, plan.method, plan.config, bias_correction=dict(plan.bias_correction))


def uniform_plan(lg, stats, bits: int) -> Plan:
    tensors = {k: range_format(lg, stats, k, bits) for k in lg.tensors()}
    return clamp_biases(lg, Plan(tensors))


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


def search_order(lg) -> list:
    """Tensor keys in topological order: per layer its weights, then bias, then output activation."""
    keys = []
    for layer in lg.layers.values():
        if layer.weight is not None:
            keys.append(layer.weight_key)
        if layer.bias is not None:
            keys.append(layer.bias_key)
        keys.append(layer.output_key)
    return keys
