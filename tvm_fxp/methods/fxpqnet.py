"""FxP-QNet (Shawahna et al. 2022): gradual per-data-structure precision reduction, label-free.

Every data structure (each layer's weights, bias and output activation, and the input) starts at
``start_bits`` and is lowered one bit at a time; for the lowered width the fractional length is the one
(among ``f0 + frac_offsets``, ``f0`` from the range) that minimises the *network-level* prediction error
against the float model's own outputs (self-distillation: error = ``1 - agreement + KL``; no labels are
read).  Each round scores every structure's one-bit step by memory
saved per unit of added network error and queues the steps best-first; it commits them one at a time, each
with all earlier commits applied and its fractional length re-chosen on network-level error.  A committed
structure's next step is scored against the plan now and goes back into the queue (``repeat``; the others
keep their scores from the round's start: a lazy form of the paper's one-step-at-a-time loop, which
re-scores everything after every commit).  A step that would break the budget (agreement with float
dropping by more than ``budget``) is not committed and freezes its structure for the round (listed in
``plan.config["refused"]``); the round ends when every structure is frozen.  After a round that committed
steps, the next one tries every frozen structure again (``retry``: the fractional lengths are re-chosen and
errors do not add up exactly, so a step refused earlier may keep the budget now).  Measured on fmnist_vgg
(2-point budget): one pass of every structure per round (neither ``repeat`` nor ``retry``) stopped at 5.42x
less memory than float with the 1568x128 dense layer's weights at 6 bits, because each round spent the budget
on every structure alike; with the queue the large structures go first and it reached 9.40x (dense weights
at 3 bits) with 163 evaluations instead of 149, 0.3 points of top-1 lost on the check split.  The queue does
that; ``retry`` alone is worth little on the reference models and its effect depends on the path: without it
fmnist_vgg reached 9.37x (131 evaluations) and fmnist_resnet 6.89x (314 evaluations; 6.72x and 287 with it,
where the bias correction came at a different point of the search and was not kept).

The ranking and the fractional-length choice are relative, so they are scored on the first ``screen`` search
inputs (512 of the CLI's 2,000); every commit's budget check is on all of them (the guarantee is unchanged),
and costs only the other inputs when the screen has scored that plan.  With a check split
(``evaluate.check``, other unlabelled images; the CLI's is the next 2,000 validation images) each round's
plan must keep the budget there too, else its last commits are undone (their structures left out of the retries)
until it does: commits accepted at the budget's edge on the same images overfit them (measured on
fmnist_resnet at a 2-point budget: 0.45 points lost on the search images, 1.1 on 3,000 unseen ones).  Rounds
repeat until a round commits nothing (and the correction below recovers nothing) or the time limit is hit
(the best plan so far, always within budget, is returned).

The label-free post-training correction (``correction.correct_biases``, on by default): each layer's bias
absorbs the shift of its output mean against the float model, kept only when it lowers the network error,
does not lower the agreement and keeps the budget.  It runs whenever the search is stuck (every remaining
step breaks the budget) after committing steps since the last correction; when it is kept, the frozen
structures are tried again from the corrected plan, so the recovered error is spent on further reductions.
It also runs once at the end (after a timeout too) unless the last correction already saw the final plan.
Reported in ``plan.config["corrections"]``.
"""

from __future__ import annotations

import heapq
from dataclasses import asdict, dataclass

import numpy as np

from ..plan import Plan
from .correction import correct_biases, network_error
from .evaluate import SearchTimeout, clamp_biases, range_format, search_order, uniform_plan
from .uniform import MethodError


@dataclass(frozen=True)
class FxpQNet:
    budget: float = 0.02                 # max drop of top-1 agreement with the float model (fraction; the
    # paper's drops are 0.95-1.99% of top-1; at 0.01 fmnist_resnet stopped at 5.39x, 0.34 points on test)
    start_bits: int = 12
    min_bits: int = 2
    frac_offsets: tuple = (-1, 0, 1)
    bias_correction: bool = True
    repeat: bool = True                  # a committed structure's next step goes back into the round's queue
    retry: bool = True                   # after a round that committed, its frozen structures are tried again
    screen: int = 512                    # inputs the ranking and the fractional-length choice are scored on
    name = "fxpqnet"
    label_free = True
    check_split = True                   # each round confirmed on a check split when the data has one (the CLI's)

    def __post_init__(self):
        if not 2 <= self.min_bits <= self.start_bits <= 16:
            raise MethodError("fxpqnet: need 2 <= min_bits <= start_bits <= 16")
        if self.screen < 1:
            raise MethodError(f"fxpqnet: screen must be at least 1 input, got {self.screen}")


def allocate(lg, stats: dict, config: FxpQNet, evaluate) -> Plan:
    if evaluate is None:
        raise MethodError("fxpqnet needs (unlabelled) evaluation data")
    sizes = {k: int(np.prod(shape)) for k, (_, _, shape) in lg.tensors().items()}
    plan = uniform_plan(lg, stats, config.start_bits)
    frozen: set = set()
    commits = []
    refused = []                # steps that broke the budget (their structure frozen for the round)
    corrections: list = []
    since_correction = 1        # commits since the last correction (the start counts as one)
    rounds = 0
    committed = 0
    undone: set = set()         # structures whose commit the check split undid

    screen = evaluate.screen(config.screen)
    check = getattr(evaluate, "check", None)

    def drop(p):
        return 1.0 - evaluate(p).agreement

    def confirmed(p) -> bool:
        """Within the budget on the check split too (always, without one)."""
        return check is None or 1.0 - check(p, limited=False).agreement <= config.budget

    try:
        if drop(plan) > config.budget:
            raise MethodError(f"fxpqnet: the {config.start_bits}-bit starting plan already breaks the budget")
        while True:
            rounds += 1
            if config.retry and committed > 0:
                # a step that broke the budget earlier in the search may keep it now (the fractional lengths
                # are re-chosen and errors do not add up exactly): try every structure again, except those
                # undone on the check split
                frozen = {k for k in frozen if k in undone}
            base_err = network_error(screen(plan))
            trials = []
            for key in search_order(lg):       # score every structure's one-bit step (range-derived frac)
                if key in frozen:
                    continue
                bits = plan[key].bits - 1
                if bits < config.min_bits:
                    frozen.add(key)
                    continue
                trial = clamp_biases(lg, plan.with_format(key, range_format(lg, stats, key, bits)))
                added = max(network_error(screen(trial)) - base_err, 1e-9)
                trials.append((sizes[key] / added, key, bits))
            committed = 0
            history = [(plan, None)]     # the plan after each of this round's commits (and its commit's index)
            queue = [(-ratio, i, key, bits) for i, (ratio, key, bits) in enumerate(trials)]
            heapq.heapify(queue)
            order = len(queue)
            while queue:                 # best first; a committed structure's next step goes back in the queue
                _, _, key, bits = heapq.heappop(queue)
                # fractional length on network-level error, with everything committed so far applied
                options = [clamp_biases(lg, plan.with_format(key, range_format(lg, stats, key, bits, off)))
                           for off in config.frac_offsets]
                candidate = min(options, key=lambda p: network_error(screen(p)))
                d = drop(candidate)
                if d > config.budget:
                    frozen.add(key)    # its one-bit step breaks the budget
                    refused.append({"round": rounds, "tensor": key, "bits": bits, "agreement_drop": round(d, 5)})
                    continue
                plan = candidate
                committed += 1
                commits.append({"round": rounds, "tensor": key, "bits": bits, "frac": plan[key].frac,
                                "agreement_drop": round(d, 5)})
                history.append((plan, len(commits) - 1))
                if config.repeat and bits - 1 >= config.min_bits:
                    # the same structure's next step, scored against the plan now (the others keep their scores
                    # from the round's start: a lazy form of re-scoring every structure after each commit)
                    trial = clamp_biases(lg, plan.with_format(key, range_format(lg, stats, key, bits - 1)))
                    added = max(network_error(screen(trial)) - network_error(screen(plan)), 1e-9)
                    order += 1
                    heapq.heappush(queue, (-sizes[key] / added, order, key, bits - 1))
            while len(history) > 1 and not confirmed(plan):
                # the round's plan breaks the budget on the check split: undo its last commits until it does not
                _, i = history.pop()
                commits[i]["undone_on_check"] = True
                frozen.add(commits[i]["tensor"])
                undone.add(commits[i]["tensor"])
                plan = history[-1][0]
                committed -= 1
            since_correction += committed
            if committed == 0:           # (also when every structure is frozen: no trials)
                # stuck: every remaining step breaks the budget.  Correct the biases; if that recovers error,
                # the frozen structures get another chance from the corrected plan
                if not config.bias_correction or since_correction == 0 or evaluate.out_of_time():
                    break
                corrected, report = correct_biases(lg, plan, evaluate, max_drop=config.budget)
                if report["applied"] and not confirmed(corrected):
                    report = {**report, "applied": False, "check": "breaks the budget on the check split"}
                corrections.append({"round": rounds, **report})
                since_correction = 0
                if not report["applied"]:
                    break
                plan = corrected
                frozen = {k for k in frozen if plan[k].bits - 1 < config.min_bits}
    except SearchTimeout:
        commits.append({"timeout": True})
    if config.bias_correction and since_correction > 0:    # else the last correction saw this very plan
        corrected, report = correct_biases(lg, plan, evaluate, max_drop=config.budget)
        if report["applied"] and not confirmed(corrected):
            report = {**report, "applied": False, "check": "breaks the budget on the check split"}
        plan = corrected if report["applied"] else plan
        corrections.append({"round": "final", **report})
    out = Plan(plan.tensors, config.name, {**asdict(config), "frac_offsets": list(config.frac_offsets),
                                           "rounds": rounds, "commits": commits, "refused": refused,
                                           "corrections": corrections,
                                           "evaluations": evaluate.evaluations,
                                           "screen_evaluations": evaluate.screen_evaluations,
                                           "check_evaluations": check.evaluations if check else None,
                                           "images_simulated": evaluate.images})
    out.bias_correction = dict(plan.bias_correction)
    return out
