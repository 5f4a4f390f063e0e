"""de Bruin, Zivkovic, Corporaal 2020: quantization for accumulator-constrained processors.

Target accumulator width ``P`` (16).  For each weighted layer, in topological order, the candidate
configurations are (input activation bits ``w_x``, weight bits ``w_w``) that are *proven* not to overflow a
``P``-bit accumulator and use it fully: for every ``w_x`` the largest ``w_w`` that still fits.  The proof is
the worst case ``X * fan_in * max|Wq| + max|B|`` (the paper's ``w_x + w_w + ceil(log2 K) - 1 <= P``) or, when
``proof="l1"``, the tighter data-dependent per-channel bound ``X * sum_k |Wq[c, k]| + |B[c]|`` (as in A2Q),
computed on the actually quantized weights and bias.  Among the candidates the most accurate one is kept
(with earlier layers' choices applied).  An activation read by several weighted layers is fixed by the
first; later readers only choose ``w_w``.  The bias is stored at the accumulator scale in ``P`` bits.

Where no such configuration keeps accuracy (the most accurate one loses more than ``budget`` against float,
with the earlier layers applied), the paper's fallback splits the reduction: the layer's input channels are
cut into at most ``max_tiles`` ranges whose partial sums provably fit the ``P``-bit accumulator
(``tvm_fxp.bounds.k_tiles``, the L1 proof restricted to a range), summed in ``P`` bits and added in 32 bits.
Those tiled configurations (for every ``w_x`` up to 8 bits, the widest ``w_w`` <= 8 that tiles) join the
candidates and the most accurate is kept.  ``max_tiles=0`` keeps to whole-reduction configurations.

"Most accurate" is a pick among up to a dozen candidates per layer, nine layers in a row: on the 2,000 search
images alone it overfits them (measured on fmnist_resnet: 0.8 points lost on the search images, 1.4 on 1,000
unseen validation images).  With a check split (``evaluate.check``; the CLI's is the next 2,000 validation
images) every candidate is scored on the search and check images together (``pooled``), 4,000 images.
Activations that no weighted layer reads get ``other_bits`` before the search, so every candidate is
scored with them.

Each weighted layer's claim is a typed record in ``plan.proofs`` (``tvm_fxp.bounds.prove_accumulator``);
``tvm_fxp.bind_plan`` records each layer's bounds in ``plan.layers[name]["accumulator"]`` (bits needed, which
proof decided), and ``Realize(accumulator="narrow")`` then uses int16 accumulators (k-tiled where the proof
says so).  ``Realize`` checks every claim against the weights.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from ..bounds import MAX_TILES, formats_bound, k_tiles, prove_accumulator
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
    max_tiles: int | None = None  # k-tiled fallback; None: MAX_TILES with 16-bit accumulators, else 0
    budget: float = 0.0           # loss (fraction, cumulative) above which a layer may be k-tiled
    pooled: bool = True           # score candidates on the search and check images together, when given
    name = "debruin2020"
    check_split = True            # the CLI hands it a check split (pooled with the search images: see ``allocate``)
    check_role = "every candidate scored on these and"

    def __post_init__(self):
        if not 8 <= self.acc_bits <= 32:
            raise MethodError(f"debruin2020: --acc-bits must be in 8..32, got {self.acc_bits}")
        if self.max_tiles is not None and not 0 <= self.max_tiles <= MAX_TILES:
            raise MethodError(f"debruin2020: --max-tiles must be in 0..{MAX_TILES}, got {self.max_tiles}")
        if self.max_tiles and self.acc_bits != 16:
            raise MethodError("debruin2020: k-tiles are realized with int16 partial sums: use --acc-bits 16 "
                              "or --max-tiles 0")
        if not 0 <= self.budget < 1:
            raise MethodError(f"debruin2020: budget must be a fraction in [0, 1), got {self.budget}")
        if self.proof not in ("l1", "worst-case"):
            raise MethodError(f"debruin2020: proof must be 'l1' or 'worst-case', got {self.proof!r}")


def tile_limit(config: DeBruin2020) -> int:
    """Most k-tiles per layer: ``max_tiles``, by default ``MAX_TILES`` for 16-bit accumulators (the int16
    partial-sum kernels) and none for other widths."""
    if config.max_tiles is not None:
        return config.max_tiles
    return MAX_TILES if config.acc_bits == 16 else 0


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
            bound = formats_bound(layer, x_fmt, w_fmt, b_fmt, config.proof)
            if bound < limit:
                best = (x_fmt, w_fmt, b_fmt, bound)
            else:
                break
        if best is not None:
            out.append(best)
    return out


def layer_groups(lg, layer) -> int:
    if layer.op != "conv2d":
        return 1
    return int(lg.layers[layer.inputs[0]].out_shape[0]) // int(layer.weight.shape[1])


def tiled_candidates(lg, stats, layer, x_fixed, config) -> list:
    """``(x_fmt, w_fmt, b_fmt, tiles)``: per input width (<= 8 bits, as ``Realize`` tiles), the widest weights
    (<= 8 bits) whose reduction splits into at most ``max_tiles`` ranges that fit the accumulator, when the
    whole reduction does not."""
    if not tile_limit(config) or layer_groups(lg, layer) != 1:
        return []
    x_key = lg.layers[layer.inputs[0]].output_key
    top = min(8, config.max_bits)
    xs = [x_fixed] if x_fixed is not None else [range_format(lg, stats, x_key, b)
                                                for b in range(config.min_bits, top + 1)]
    out = []
    for x_fmt in xs:
        if x_fmt.bits > 8:
            continue
        for wb in range(top, config.min_bits - 1, -1):
            w_fmt = range_format(lg, stats, layer.weight_key, wb)
            tiles = k_tiles(x_fmt.max_abs_q, w_fmt.quantize(layer.weight), layer.op, 1, tile_limit(config))
            if tiles is not None and len(tiles.ranges) > 1:
                out.append((x_fmt, w_fmt, bias_format(layer, x_fmt, w_fmt, config.acc_bits), tiles))
                break
    return out


def allocate(lg, stats: dict, config: DeBruin2020, evaluate) -> Plan:
    if evaluate is None:
        raise MethodError("debruin2020 needs evaluation data (the most accurate safe configuration is kept)")
    check = getattr(evaluate, "check", None) if config.pooled else None
    # with a check split, every candidate is scored on the search and check images together (the choice
    # among candidates is a most-accurate pick: on 2,000 images alone it overfits them)
    pooled_loss = evaluate.pooled_loss if check is not None else evaluate.loss

    plan = uniform_plan(lg, stats, 16)
    # activations that no weighted layer reads get ``other_bits`` first, so every candidate is scored with them
    read = {lg.layers[l.inputs[0]].output_key for l in lg.layers.values() if l.weight is not None}
    for layer in lg.layers.values():
        if layer.output_key not in read:
            plan = plan.with_format(layer.output_key, range_format(lg, stats, layer.output_key, config.other_bits))
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

        def score(options, tiled):
            nonlocal timed_out
            out = []
            for x_fmt, w_fmt, b_fmt, extra in options:
                trial = plan.with_format(x_key, x_fmt).with_format(layer.weight_key, w_fmt)
                if b_fmt is not None:
                    trial = trial.with_format(layer.bias_key, b_fmt)
                if not timed_out:
                    try:
                        out.append((pooled_loss(trial), tiled, -(x_fmt.bits + w_fmt.bits), trial, extra, x_fmt,
                                    w_fmt))
                        continue
                    except SearchTimeout:
                        timed_out = True
                # out of time: unscored candidates rank behind scored ones, balanced widths first
                out.append((float("inf"), tiled, -min(x_fmt.bits, w_fmt.bits), trial, extra, x_fmt, w_fmt))
            return out

        scored = score(cands, 0)
        if min(t[0] for t in scored) > config.budget:     # no whole-reduction configuration keeps accuracy
            scored += score(tiled_candidates(lg, stats, layer, fixed.get(x_key), config), 1)
        # most accurate; ties -> untiled, then more operand bits (more headroom for later layers' errors)
        _, tiled, _, plan, extra, x_fmt, w_fmt = min(scored, key=lambda t: t[:3])
        fixed[x_key] = x_fmt
        proofs[layer.name] = prove_accumulator(layer, x_fmt, w_fmt, plan[layer.bias_key] if layer.bias is not None
                                               else None, config.acc_bits, config.proof, extra if tiled else None)
    return Plan(plan.tensors, config.name, {**asdict(config), "timed_out": timed_out,
                                            "evaluations": evaluate.evaluations,
                                            "check_evaluations": check.evaluations if check else None}, proofs=proofs)
