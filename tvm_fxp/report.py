"""The per-layer reports (Markdown, HTML with plots) of a bound plan."""

from __future__ import annotations

import re

import numpy as np

from .costs import plan_costs  # noqa: F401 -- the summary's cost figures, reported beside the layers
from .metrics import agreement, sqnr_db, top1  # noqa: F401


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
    from .passes import float_islands

    lines = [f"# tvm-fxp report: {summary.get('model', '')}", "",
             f"Method `{summary['method']}`; data: {summary.get('data_source', '-')}.", ""]
    lines += ["| metric | value |", "|---|---|"]
    for k in ("float_top1", "fxp_top1", "agreement", "bit_exact", "float_ops_in_integer_graph",
              "weight_bits", "activation_bits", "memory_reduction_vs_float", "mult_cost_vs_8bit",
              "max_accumulator_bits", "wall_s"):
        v = summary.get(k)
        lines.append(f"| {k} | {f'{v:.4f}' if isinstance(v, float) else v} |")
    if summary.get("outputs") and len(summary["outputs"]) > 1:
        lines += ["", "## Outputs", "", "Each output is dequantized with its own format.", "",
                  "| output layer | format | bit-exact | relative L2 vs float |", "|---|---|---|---|"]
        lines += [f"| {o['layer']} | {o['format']} | {o['bit_exact']} | {o['relative_l2_vs_float']:.4f} |"
                  for o in summary["outputs"]]
    lines += ["", "## Layers", "",
              "Formats are `Q<int>.<frac>` (sign bit counted in int; `u` = unsigned). The accumulator needs "
              "`acc_bits` (the tighter of the worst-case and the per-channel L1 proof); margin = bits left in "
              "the accumulator dtype.", "",
              "| layer | op | input | weight | bias | output | MACs | params | acc bits (worst / L1) | acc dtype | margin |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    realized_as = summary.get("accumulators") or {}
    for r in layer_table(q):
        acc = f"{r['acc_bits']} ({r['acc_worst_bits']} / {r['acc_l1_bits']})" if "acc_bits" in r else "-"
        dtype = realized_as.get(r["layer"], r.get("acc_dtype", "-"))
        lines.append(f"| {r['layer']} | {r['op']} | {r['input']} | {r['weight']} | {r['bias']} | {r['output']} | "
                     f"{r['macs']} | {r['params']} | {acc} | {dtype} | {r.get('acc_margin_bits', '-')} |")
    if realized_as:
        lines += ["", f"Accumulator policy `{summary.get('accumulator_policy', 'wide')}`: acc dtype is how each "
                  "weighted layer's products are summed in the integer graph (int16 where the bound proves it; "
                  "int16 k-tiles widened into int32 where each input-channel range's bound fits int16; else "
                  "int32/int64)."]
        reasons = summary.get("accumulator_reasons") or {}
        if reasons:
            lines += ["", "| layer | acc dtype | why |", "|---|---|---|"] + [
                f"| {name} | {realized_as.get(name, '-')} | {why} |" for name, why in reasons.items()]
    kernels = summary.get("kernels") or {}
    if kernels:
        lines += ["", f"## Kernels ({summary.get('target', 'host')})", "",
                  "The kernel each weighted layer got in the built library (`build.json`); bit-serial: ternary weight "
                  "masks against bit planes of the data (and/cnt, no multiply), chosen per layer where its estimated "
                  "cycles beat the paired int32 kernel's.", "", "| layer | kernel | accumulator | why |", "|---|---|---|---|"]
        for name, calls in kernels.items():
            for c in calls:
                what = c.get("layout") or c.get("kernel")
                if c.get("lanes") is not None and c.get("layout") == "bitserial":
                    what = f"bitserial ({c['activation_bits']}-bit data, {c['lanes']} in lanes)"
                lines.append(f"| {name} | {what} | {c.get('accumulator', '-')} | {c.get('why', '-')} |")
    tables = [(n, info["table"]) for n, info in (q.plan.layers or {}).items() if "table" in info]
    if tables:
        lines += ["", "## Lookup tables", "",
                  "Elementwise functions of one activation, as tables over its stored integers: one entry per "
                  "integer (exact: only the entry's rounding, half a step of `2^-frac`) or, for inputs wider than "
                  "12 bits, one per `2^index_shift` integers with the largest error over every input integer.", "",
                  "| layer | function | entries | index shift | table frac | max error |", "|---|---|---|---|---|---|"]
        lines += [f"| {n} | `{t['function']}` | {t['entries']} | {t['index_shift']} | {t['frac']} | "
                  f"{t['max_error']:.3g} |" for n, t in tables]
    islands = float_islands(q.graph)
    lines += ["", "## Float islands", ""]
    if islands:
        lines += ["Allowed with `--allow-float-islands`: computed in float64 between a dequantize of the input and "
                  "the quantize of the output (the simulation computes them the same way).", "",
                  "| layer | op |", "|---|---|"] + [f"| {n} | {op} |" for n, op in islands]
    else:
        lines.append("None: every op between the input quantize and the output dequantize is integer.")
    return "\n".join(lines) + "\n"


def tensor_sqnr(q, inputs: np.ndarray) -> dict:
    """SQNR (dB) of each tensor's quantizer: weights/biases on their values, activations on the float
    model's activations for ``inputs`` (the per-layer SQNR of Lin et al.; noise does not accumulate here)."""
    from .calibrate import probe_module
    from .runtime import Runner, build

    lg, plan = q.graph, q.plan
    out = {}
    for layer in lg.layers.values():
        if layer.weight is not None:
            out[layer.weight_key] = sqnr_db(layer.weight, plan[layer.weight_key].fake_quantize(layer.weight))
        if layer.bias is not None:
            out[layer.bias_key] = sqnr_db(layer.bias, plan[layer.bias_key].fake_quantize(layer.bias))
    chunks = [out for _, out in Runner(build(probe_module(q.prepared, lg)), batch=q.batch).batches(inputs)]
    for i, layer in enumerate(lg.layers.values()):
        x = np.concatenate([c[i] for c in chunks])
        out[layer.output_key] = sqnr_db(x, plan[layer.output_key].fake_quantize(x))
    return out


GRAPH_KERNEL = re.compile(r"_graph\d+$")   # schedules/graph.py: a whole chain of kernels in one call


def timing_rows(q, executable, inputs: np.ndarray, repeats: int = 3, accumulator: str = "proven") -> list[dict]:
    """Time per kernel call of one inference on this CPU (``runtime.profile``), attributed to the layers
    (``runtime.layer_times``: MACs and MACs per cycle of each conv2d/matmul kernel).

    A small model's library runs all its kernels as one call (``schedules/graph.py``); its layers are then
    timed in a host build of the same realized module (``accumulator``: its policy) with each kernel called
    on its own -- the same kernels."""
    from .runtime import build, layer_times, profile
    from .schedules import per_kernel

    batch = q.batch or 1
    x = np.asarray(inputs[:batch])
    rows = profile(executable, x, repeats)
    if any(GRAPH_KERNEL.search(r["kernel"]) for r in rows):
        with per_kernel():
            rows = profile(build(q.realized(accumulator)), x, repeats)
    return layer_times(q, rows, len(x))


def timing_markdown(rows: list[dict], top: int | None = None) -> str:
    """The timing rows as a Markdown table, slowest first (``top``: only that many), with the total."""
    total = sum(r["ms"] for r in rows) or 1.0
    lines = [f"Kernel calls of one inference on this CPU, slowest first: {sum(r['ms'] for r in rows):.3f} ms in "
             f"all ({len(rows)} calls). MACs/cycle at the nominal clock; an 8-bit AVX-512 VNNI core peaks at 64 "
             "(one `vpdpbusd` of 16x4 per cycle) per FMA port.", "",
             "| layer | kernel | ms | % | MACs | MACs/cycle | output shape |", "|---|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: -r["ms"])[:top]:
        mpc = f"{r['macs_per_cycle']:.1f}" if r.get("macs_per_cycle") else "-"
        shape = "x".join(str(v) for v in r["shapes"][-1]) if r["shapes"] else "-"
        lines.append(f"| {r['layer']} | `{r['kernel']}` | {r['ms']:.3f} | {100 * r['ms'] / total:.1f} | "
                     f"{r['macs'] or '-'} | {mpc} | {shape} |")
    return "\n".join(lines) + "\n"


def render_report(q, summary: dict, out_dir, inputs: np.ndarray | None = None, timing: list | None = None) -> dict:
    """Write ``report.html`` (self-contained), ``report_layers.png`` and ``report_layers.json``; with
    ``timing`` (``timing_rows``) also ``report_timing.json`` and a time-per-layer table in the page."""
    from .passes import float_islands
    import base64
    import html
    import io
    import json
    from pathlib import Path

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    rows = layer_table(q)
    sq = tensor_sqnr(q, inputs) if inputs is not None else {}
    lg, plan = q.graph, q.plan
    for r in rows:
        layer = lg.layers[r["layer"]]
        r["sqnr_output_db"] = sq.get(layer.output_key)
        r["sqnr_weight_db"] = sq.get(layer.weight_key) if layer.weight is not None else None
        r["weight_memory_bits"] = 0 if layer.weight is None else int(
            layer.weight.size * plan[layer.weight_key].bits + (0 if layer.bias is None else layer.bias.size * plan[layer.bias_key].bits))
        r["activation_memory_bits"] = int(np.prod(layer.out_shape)) * plan[layer.output_key].bits
        if r["layer"] in (summary.get("accumulators") or {}):
            r["acc_realized"] = summary["accumulators"][r["layer"]]
        if layer.weight is not None:
            r["mult_cost_bits2"] = layer.macs * plan[lg.layers[layer.inputs[0]].output_key].bits * plan[layer.weight_key].bits
    names = [r["layer"] for r in rows]
    fig, axes = plt.subplots(2, 2, figsize=(12, 8))
    x = np.arange(len(rows))
    ax = axes[0, 0]
    ax.bar(x - 0.2, [plan[lg.layers[n].output_key].bits for n in names], 0.4, label="output activation")
    ax.bar(x + 0.2, [plan[lg.layers[n].weight_key].bits if lg.layers[n].weight is not None else 0 for n in names],
           0.4, label="weights")
    ax.set_title("bits per tensor"), ax.legend(), ax.set_xticks(x, names, rotation=60, fontsize=7)
    ax = axes[0, 1]
    ax.bar(x, [r.get("sqnr_output_db") or 0 for r in rows], label="activation")
    ax.plot(x, [r.get("sqnr_weight_db") or np.nan for r in rows], "o", color="C3", label="weights")
    ax.set_title("quantizer SQNR (dB)"), ax.legend(), ax.set_xticks(x, names, rotation=60, fontsize=7)
    ax = axes[1, 0]
    ax.bar(x - 0.2, [r["weight_memory_bits"] / 8192 for r in rows], 0.4, label="weights+bias")
    ax.bar(x + 0.2, [r["activation_memory_bits"] / 8192 for r in rows], 0.4, label="activations (1 input)")
    ax.set_title("memory (KiB)"), ax.legend(), ax.set_xticks(x, names, rotation=60, fontsize=7)
    ax = axes[1, 1]
    acc = [r.get("acc_bits", 0) for r in rows]
    ax.bar(x, acc, label="needed (proof)")
    def used(r):
        how = r.get("acc_realized") or r.get("acc_dtype") or ""
        return 16 if how.startswith("int16") and "k-tiles" not in how else 64 if how == "int64" else \
            32 if how else np.nan

    ax.plot(x, [used(r) for r in rows], "_", markersize=20, color="k", label="accumulator dtype (realized)")
    ax.axhline(16, ls=":", color="C3", label="16-bit accumulator")
    ax.set_title("accumulator bits"), ax.legend(fontsize=7), ax.set_xticks(x, names, rotation=60, fontsize=7)
    fig.suptitle(f"{summary.get('model', '')}: {summary.get('method', '')}")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    png = buf.getvalue()
    (out_dir / "report_layers.png").write_bytes(png)
    (out_dir / "report_layers.json").write_text(json.dumps(rows, indent=1, default=float) + "\n")
    timing_html = "<p>Not measured (no model.so for this CPU).</p>"
    if timing:
        (out_dir / "report_timing.json").write_text(json.dumps(timing, indent=1, default=float) + "\n")
        tcols = ["layer", "kernel", "ms", "macs", "macs_per_cycle", "shapes"]
        timing_html = (f"<p>{sum(r['ms'] for r in timing):.3f} ms per inference in {len(timing)} kernel calls, "
                       "slowest first; MACs/cycle at the nominal clock.</p><table><tr>" +
                       "".join(f"<th>{c}</th>" for c in tcols) + "</tr>" + "".join(
                           "<tr>" + "".join(f"<td>{html.escape(str(round(r[c], 3) if isinstance(r[c], float) else r[c] if r[c] is not None else '-'))}</td>"
                                            for c in tcols) + "</tr>"
                           for r in sorted(timing, key=lambda r: -r["ms"])) + "</table>")
    cols = ["layer", "op", "input", "weight", "bias", "output", "macs", "params", "sqnr_weight_db", "sqnr_output_db",
            "weight_memory_bits", "activation_memory_bits", "acc_bits", "acc_worst_bits", "acc_l1_bits", "acc_dtype",
            "acc_realized", "acc_margin_bits"]

    def cell(v):
        return f"{v:.2f}" if isinstance(v, float) else html.escape(str(v if v is not None else "-"))

    table = "<table><tr>" + "".join(f"<th>{c}</th>" for c in cols) + "</tr>" + "".join(
        "<tr>" + "".join(f"<td>{cell(r.get(c))}</td>" for c in cols) + "</tr>" for r in rows) + "</table>"
    summary_rows = "".join(f"<tr><td>{html.escape(str(k))}</td><td>{cell(v)}</td></tr>" for k, v in summary.items()
                           if not isinstance(v, (dict, list)))
    islands = float_islands(q.graph)
    islands_html = ("Allowed with --allow-float-islands, computed in float64 between a dequantize and a quantize: "
                    + ", ".join(f"{html.escape(n)} ({html.escape(str(op))})" for n, op in islands)) if islands else \
        "None: every op between the input quantize and the output dequantize is integer."
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>tvm-fxp report</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse;font-size:12px}}
td,th{{border:1px solid #ccc;padding:3px 6px;text-align:right}}th{{background:#eee}}</style></head><body>
<h1>tvm-fxp report: {html.escape(str(summary.get('model', '')))}</h1>
<h2>Summary</h2><table>{summary_rows}</table>
<h2>Per layer</h2><p>Formats are Q&lt;int&gt;.&lt;frac&gt; (u = unsigned). SQNR is each quantizer's own (not cumulative);
acc bits is what the layer's proof needs (worst case / per-channel L1); margin = bits left in the accumulator dtype.</p>
{table}
<h2>Float islands</h2><p>{islands_html}</p>
<h2>Time per layer</h2>{timing_html}
<h2>Plots</h2><img alt="per-layer plots" src="data:image/png;base64,{base64.b64encode(png).decode()}">
</body></html>
"""
    (out_dir / "report.html").write_text(page)
    return {"rows": rows, "png": str(out_dir / "report_layers.png"), "html": str(out_dir / "report.html"),
            "timing": timing}
