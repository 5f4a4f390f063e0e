"""Costs of a plan (memory, multiply cost, accumulator widths) and the per-layer Markdown report."""

from __future__ import annotations

import numpy as np

FLOAT_BITS = 32


def plan_costs(q) -> dict:
    """Memory and multiply-cost figures of a bound plan (``tvm_fxp.api.Quantized``)."""
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


def top1(logits: np.ndarray, labels: np.ndarray | None) -> float | None:
    if labels is None:
        return None
    return float(np.mean(np.argmax(logits, axis=1) == labels))


def agreement(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean(np.argmax(a, axis=1) == np.argmax(b, axis=1)))


def layer_table(q) -> list[dict]:
    lg, plan = q.graph, q.plan
    rows = []
    for layer in lg.layers.values():
        row = {"layer": layer.name, "op": layer.op + ("+" + "+".join(layer.fused) if layer.fused else ""),
               "input": ", ".join(str(plan[lg.layers[i].output_key]) for i in layer.inputs) or "-",
               "weight": str(plan[layer.weight_key]) if layer.weight is not None else "-",
               "bias": str(plan[layer.bias_key]) if layer.bias is not None else "-",
               "output": str(plan[layer.output_key]), "macs": layer.macs,
               "params": 0 if layer.weight is None else int(layer.weight.size + (0 if layer.bias is None else layer.bias.size))}
        a = q.arithmetic.get(layer.name)
        if a is not None:
            row.update({"acc_bits": a.bound.bits, "acc_worst_bits": a.bound.worst_case_bits,
                        "acc_l1_bits": a.bound.l1_bits, "acc_dtype": a.bound.dtype,
                        "acc_margin_bits": (32 if a.bound.dtype == "int32" else 64) - a.bound.bits})
        rows.append(row)
    return rows


def markdown_report(q, summary: dict) -> str:
    lines = [f"# tvm-fxp report: {summary.get('model', '')}", "",
             f"Method `{summary['method']}`; data: {summary.get('data_source', '-')}.", ""]
    lines += ["| metric | value |", "|---|---|"]
    for k in ("float_top1", "fxp_top1", "agreement", "bit_exact", "float_ops_in_integer_graph",
              "weight_bits", "activation_bits", "memory_reduction_vs_float", "mult_cost_vs_8bit",
              "max_accumulator_bits", "wall_s"):
        v = summary.get(k)
        lines.append(f"| {k} | {f'{v:.4f}' if isinstance(v, float) else v} |")
    lines += ["", "## Layers", "",
              "Formats are `Q<int>.<frac>` (sign bit counted in int; `u` = unsigned). The accumulator needs "
              "`acc_bits` (the tighter of the worst-case and the per-channel L1 proof); margin = bits left in "
              "the accumulator dtype.", "",
              "| layer | op | input | weight | bias | output | MACs | params | acc bits (worst / L1) | acc dtype | margin |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in layer_table(q):
        acc = f"{r['acc_bits']} ({r['acc_worst_bits']} / {r['acc_l1_bits']})" if "acc_bits" in r else "-"
        lines.append(f"| {r['layer']} | {r['op']} | {r['input']} | {r['weight']} | {r['bias']} | {r['output']} | "
                     f"{r['macs']} | {r['params']} | {acc} | {r.get('acc_dtype', '-')} | {r.get('acc_margin_bits', '-')} |")
    return "\n".join(lines) + "\n"
