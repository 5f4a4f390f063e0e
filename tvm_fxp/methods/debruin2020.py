"""de Bruin, Zivkovic, Corporaal 2020: quantization for accumulator-constrained processors.

Target accumulator width ``P`` (16).  For each weighted layer, in topological order, the candidate
configurations are (input activation bits ``w_x``, weight bits ``w_w``) that are *proven* not to overflow a
``P``-bit accumulator and use it fully: for every ``w_x`` the largest ``w_w`` that still fits.  The proof is
the worst case ``X * fan_in * max|Wq| + max|B|`` (the paper's ``w_x + w_w + ceil(log2 K) - 1 <= P``) or, when
``proof="l1"``, the tighter data-dependent per-channel bound ``X * sum_k |Wq[c, k]| + |B[c]|`` (as in A2Q),
computed on the actually quantized weights and bias.  Among the candidates the most accurate one is kept
(with earlier layers' choices applied).  An activation read by several weighted layers is fixed by the
first; later readers only choose ``w_w``.  The bias is stored at the accumulator scale in ``P`` bits.

``tvm_fxp.bind_plan`` records each layer's proof in ``plan.layers[name]["accumulator"]`` (bounds, bits
needed, which proof decided), and ``Realize(accumulator="narrow")`` then uses int16 accumulators.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from ..bounds import bias_at_accumulator, weight_l1_per_channel
from ..formats import FixedPointFormat, frac_for_range
from ..plan import Plan
from .evaluate import SearchTimeout, range_format, uniform_plan
from .uniform import MethodError


@dataclass(frozen=True)
class DeBruin2020:
    acc_bits: int = 16
    proof: str = "l1"             # "l1" or "worst-case"
    min_bits: int = 2
    max_bits: int = 12
    other_bits: int = 8           # activations no weighted layer reads (e.g. the logits)
    name = "debruin2020"

    def __post_init__(self):
        if not 8 <= self.acc_bits <= 32:
            raise MethodError(f"debruin2020: --acc-bits must be in 8..32, got {self.acc_bits}")
        if self.proof not in ("l1", "worst-case"):
            raise MethodError(f"debruin2020: proof must be 'l1' or 'worst-case', got {self.proof!r}")


def layer_bound(layer, x_fmt: FixedPointFormat, w_fmt: FixedPointFormat, b_fmt, proof: str) -> int:
    """The proven accumulator magnitude of ``layer`` under these formats."""
    wq = w_fmt.quantize(layer.weight)
    acc_frac = np.full(layer.channels, x_fmt.frac + w_fmt.frac)
    b = np.zeros(layer.channels, dtype=np.int64)
    if b_fmt is not None:
        b = np.abs(bias_at_accumulator(b_fmt.quantize(layer.bias), b_fmt, acc_frac))
    X = x_fmt.max_abs_q
    if proof == "worst-case":
        return int(X * layer.fan_in * w_fmt.max_abs_q + b.max(initial=0))
    return int(np.max(X * weight_l1_per_channel(wq, layer.weight_axis) + b))


def bias_format(layer, x_fmt, w_fmt, acc_bits) -> FixedPointFormat | None:
    if layer.bias is None:
        return None
    acc = x_fmt.frac + w_fmt.frac
    f = min(frac_for_range(float(np.abs(layer.bias).max(initial=0)), acc_bits, True), acc)
    return FixedPointFormat(acc_bits, f, True)


def candidates(lg, stats, layer, x_fixed, config) -> list:
    """``(x_fmt, w_fmt, b_fmt, bound)`` using the accumulator fully, one per input bit-width."""
    limit = 1 << (config.acc_bits - 1)
    x_key = lg.layers[layer.inputs[0]].output_key
    xs = [x_fixed] if x_fixed is not None else [range_format(lg, stats, x_key, b)
                                                for b in range(config.min_bits, config.max_bits + 1)]
    out = []
    for x_fmt in xs:
        best = None
        for wb in range(config.min_bits, config.max_bits + 1):
            w_fmt = range_format(lg, stats, layer.weight_key, wb)
            b_fmt = bias_format(layer, x_fmt, w_fmt, config.acc_bits)
            bound = layer_bound(layer, x_fmt, w_fmt, b_fmt, config.proof)
            if bound < limit:
                best = (x_fmt, w_fmt, b_fmt, bound)
            else:
                break
        if best is not None:
            out.append(best)
    return out


def allocate(lg, stats: dict, config: DeBruin2020, evaluate) -> Plan:
    if evaluate is None:
        raise MethodError("debruin2020 needs evaluation data (the most accurate safe configuration is kept)")
    plan = uniform_plan(lg, stats, 16)
    fixed: dict = {}
    proofs = {}
    timed_out = False
    for layer in [l for l in lg.layers.values() if l.weight is not None]:
        x_key = lg.layers[layer.inputs[0]].output_key
        cands = candidates(lg, stats, layer, fixed.get(x_key), config)
        if not cands:
            raise MethodError(f"debruin2020: layer {layer.name} (fan-in {layer.fan_in}) has no configuration "
                              f"with >= {config.min_bits}-bit operands that provably fits a {config.acc_bits}-bit "
                              "accumulator; raise --acc-bits or lower --min-bits")
        scored = []
        for x_fmt, w_fmt, b_fmt, bound in cands:
            trial = plan.with_format(x_key, x_fmt).with_format(layer.weight_key, w_fmt)
            if b_fmt is not None:
                trial = trial.with_format(layer.bias_key, b_fmt)
            if not timed_out:
                try:
                    scored.append((evaluate.loss(trial), -(x_fmt.bits + w_fmt.bits), trial, bound, x_fmt, w_fmt))
                    continue
                except SearchTimeout:
                    timed_out = True
            # out of time: unscored candidates rank behind scored ones, balanced widths first
            scored.append((float("inf"), -min(x_fmt.bits, w_fmt.bits), trial, bound, x_fmt, w_fmt))
        # most accurate; ties -> more operand bits (more headroom for later layers' errors)
        loss, _, plan, bound, x_fmt, w_fmt = min(scored, key=lambda t: (t[0], t[1]))
        fixed[x_key] = x_fmt
        proofs[layer.name] = {"input_bits": x_fmt.bits, "weight_bits": w_fmt.bits, "bound": bound,
                              "bound_bits": int(bound).bit_length() + 1, "acc_bits": config.acc_bits,
                              "proof": config.proof}
    # activations that no weighted layer reads
    for layer in lg.layers.values():
        if layer.output_key not in fixed:
            plan = plan.with_format(layer.output_key, range_format(lg, stats, layer.output_key, config.other_bits))
    return Plan(plan.tensors, config.name, {**asdict(config), "proofs": proofs, "timed_out": timed_out,
                                            "evaluations": evaluate.evaluations})
