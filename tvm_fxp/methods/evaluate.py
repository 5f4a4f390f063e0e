"""What the search methods share: scoring plans against the float model, the time limit, format helpers.

``Evaluator(plan) -> Score`` runs a candidate plan on fixed inputs through a simulator (``sim``: any object
with ``outputs(plan, inputs)`` and ``layer_means(plan, inputs)``; the face hands in the compiled parametric
simulation, ``tvm_fxp.passes.plan_scorer.PlanScorer``, tests may hand in a numpy one) and compares it with the
float model's outputs: top-1 on labels when there are labels, and always the label-free agreement and KL
divergence with the float model's own predictions (self-distillation, no labels needed).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from ..formats import FixedPointFormat, frac_for_range
from ..plan import Plan
from ..metrics import agreement, kl_divergence, top1


@dataclass(frozen=True)
class Score:
    top1: float | None
    agreement: float
    kl: float

    def quality(self, use_labels: bool) -> float:
        """The number a budget is measured on: top-1 when labelled, else agreement with float."""
        return self.top1 if use_labels and self.top1 is not None else self.agreement


class SearchTimeout(Exception):
    pass


@dataclass
class Evaluator:
    """Score plans of one model on ``inputs`` (and ``labels``), with a cache and an optional time limit.

    ``sim`` simulates a plan (``outputs(plan, inputs)``, ``layer_means(plan, inputs)``); ``float_out`` are the
    float model's outputs on ``inputs``.  The time limit counts from construction (building ``sim`` is not
    the search's time)."""

    sim: object
    inputs: np.ndarray
    float_out: np.ndarray
    labels: np.ndarray | None = None
    time_limit: float | None = None
    use_labels: bool = True
    progress: object = None                  # a tqdm bar, updated once per evaluation
    max_evaluations: int | None = None       # a machine-independent budget (tests); None: unlimited
    _cache: dict = field(default_factory=dict)
    parent: "Evaluator | None" = None        # set on a ``screen``: the evaluator it was cut from
    check: "Evaluator | None" = None         # the same scorer on other inputs (a search's check split), if any

    def __post_init__(self):
        self.started = time.time()
        self.float_top1 = top1(self.float_out, self.labels)
        if self.labels is None:
            self.use_labels = False
        self.evaluations = 0
        self.screen_evaluations = 0          # evaluations of this evaluator's screens (on fewer inputs)
        self.images = 0                      # inputs simulated in all (screens included): the search's cost
        self._screens: dict = {}
        self._outputs: dict = {}             # a screen's outputs per plan, the head of its parent's outputs

    def screen(self, n: int) -> "Evaluator":
        """The same scorer on the first ``n`` inputs only (its own cache; its evaluations are counted here as
        ``screen_evaluations``, and share the time limit): for a search's relative choices (which candidate
        first, which fractional length) where its budget is still checked on every input.  A plan the screen
        has scored costs this evaluator only the other inputs: the screen's outputs are the head of its own
        (each image's outputs do not depend on the others in its batch).  ``n`` at or above the number of
        inputs: this evaluator itself."""
        if n >= self.size:
            return self
        if n not in self._screens:
            inputs = [a[:n] for a in self.inputs] if isinstance(self.inputs, (list, tuple)) else self.inputs[:n]
            child = Evaluator(self.sim, inputs, self.float_out[:n],
                              None if self.labels is None else self.labels[:n], self.time_limit,
                              self.use_labels, self.progress, None, parent=self)
            child.started = self.started
            self._screens[n] = child
        return self._screens[n]

    @property
    def reference(self) -> float:
        """Float model's quality on the same measure as ``Score.quality``."""
        return self.float_top1 if self.use_labels else 1.0

    @property
    def size(self) -> int:
        return len(self.inputs[0]) if isinstance(self.inputs, (list, tuple)) else len(self.inputs)

    def _tail(self, start: int):
        return [a[start:] for a in self.inputs] if isinstance(self.inputs, (list, tuple)) else self.inputs[start:]

    def out_of_time(self) -> bool:
        if self.parent is not None:
            return self.parent.out_of_time()
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
        head = max((s._outputs[key] for s in self._screens.values() if key in s._outputs), key=len, default=None)
        if head is None:
            out = self.sim.outputs(plan, self.inputs)
        else:
            out = np.concatenate([head, self.sim.outputs(plan, self._tail(len(head)))])
        root = self if self.parent is None else self.parent
        root.images += self.size - (0 if head is None else len(head))
        if self.parent is not None:
            self._outputs[key] = out
        score = Score(top1(out, self.labels), agreement(self.float_out, out), kl_divergence(self.float_out, out))
        self._cache[key] = score
        self.evaluations += 1
        if self.parent is not None:
            self.parent.screen_evaluations += 1
        if self.progress is not None:
            self.progress.update(1)
            self.progress.set_postfix(q=f"{score.quality(self.use_labels):.4f}")
        return score

    def loss(self, plan: Plan) -> float:
        """Quality lost against float (points are fractions: 0.01 = one point)."""
        return self.reference - self(plan).quality(self.use_labels)

    def pooled_loss(self, plan: Plan) -> float:
        """The loss on these inputs and the check split's together (weighted by their sizes; just ``loss``
        without a check split): for a search's choices among many candidates, which on the search inputs
        alone overfit them."""
        if self.check is None:
            return self.loss(plan)
        n, m = self.size, self.check.size
        return (n * self.loss(plan) + m * self.check.loss(plan)) / (n + m)


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
    return Plan(tensors, plan.method, plan.config, bias_correction=dict(plan.bias_correction),
                proofs=dict(plan.proofs))


def uniform_plan(lg, stats, bits: int) -> Plan:
    tensors = {k: range_format(lg, stats, k, bits) for k in lg.tensors()}
    return clamp_biases(lg, Plan(tensors))


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
