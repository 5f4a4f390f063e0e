"""Side-by-side comparison of the precision-allocation methods on both reference models.

    .venv/bin/python bench/methods.py [--models fmnist_vgg ...] [--methods lin2016 ...] [--merge]

Every row is exactly what a user gets from

    tvm-fxp quantize MODEL --calib fashion-mnist --method M [the paper's own parameter]

(``tvm_fxp.cli.cmd_quantize`` with the CLI's defaults; no other flag): calibration on the first 500 training
images, every search scored on the first 2,000 images of the validation split (images the reference models were
never trained on; top-1 with labels, except FxP-QNet, which is label-free by design) and run to its own stopping
rule (no time limit), the chosen plan realized (de Bruin: 16-bit, k-tiled where needed) and measured on the test
split (all 10,000 images with Debian's dataset-fashion-mnist), the simulation checked bit for bit against the
integer library.  Each row records the search's evaluations, wall time and its own estimate (validation top-1)
beside the test result.  Rows: float, uniform 8-bit, and each method.  Each paper's headline target is checked
and the gap printed.  Writes ``bench/results/methods.json``, ``bench/results/methods.png`` (accuracy against
weight memory) and every chosen plan to ``bench/results/plans/MODEL_METHOD.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

# method row -> the CLI flags a user passes (the method and the paper's own parameter, nothing else)
CLI_FLAGS = {
    "uniform8": ["--method", "uniform", "--bits", "8"],
    "mellempudi2017_4bit": ["--method", "mellempudi2017", "--cluster", "4", "--weights", "4bit"],
    "mellempudi2017_ternary": ["--method", "mellempudi2017", "--cluster", "4", "--weights", "ternary"],
    "lin2016": ["--method", "lin2016"],
    "goyal2021": ["--method", "goyal2021"],
    "fxpqnet": ["--method", "fxpqnet"],
    "debruin2020": ["--method", "debruin2020", "--acc-bits", "16"],
    "debruin2020_untiled": ["--method", "debruin2020", "--acc-bits", "16", "--max-tiles", "0"],
}


def measure(q, x, y, float_out, accumulator="wide") -> tuple[dict, np.ndarray]:
    """A plan that is not one of the CLI's rows (Lin's equal-bit-width reference) measured the same way; the
    row and the realized outputs."""
    import tvm_fxp
    from tvm_fxp.report import agreement, plan_costs, top1

    real = tvm_fxp.Runner(tvm_fxp.build(q.realized(accumulator))).run(x)
    sim = tvm_fxp.Runner(tvm_fxp.build(q.simulated())).run(x)
    costs = plan_costs(q)
    return {"top1": top1(real, y), "agreement": agreement(float_out, real), "bit_exact": bool(np.array_equal(sim, real)),
            "weight_bits": costs["weight_bits"], "activation_bits": costs["activation_bits"],
            "memory_reduction_vs_float": costs["memory_reduction_vs_float"],
            "mult_cost_vs_8bit": costs["mult_cost_vs_8bit"], "max_accumulator_bits": costs["max_accumulator_bits"],
            "accumulator_policy": accumulator}, real


def paired(a_out, b_out, y) -> dict:
    """Two plans on the same images: how many only ``a`` classifies right, how many only ``b``, and the exact
    two-sided McNemar p-value of that split (binomial, p = 1/2, over the discordant images; by hand: scipy is
    not a dependency)."""
    a, b = np.argmax(a_out, axis=1) == y, np.argmax(b_out, axis=1) == y
    only_a, only_b = int((a & ~b).sum()), int((b & ~a).sum())
    n = only_a + only_b
    p = min(1.0, 2 * sum(math.comb(n, k) for k in range(min(only_a, only_b) + 1)) / 2 ** n) if n else 1.0
    return {"only_first_right": only_a, "only_second_right": only_b, "images": int(len(y)), "mcnemar_p": p}


def k_tiled_layers(q) -> dict:
    return {k: {"tiles": v["tiles"], "k": v["k"], "tile_bits": v["tile_bits"]}
            for k, v in ((k, p.to_json()) for k, p in q.plan.proofs.items()) if "tiles" in v}


def mac_accumulator_bits(q) -> int:
    """The widest accumulator a multiply-accumulate adds into: a layer's proven bits, or for a k-tiled layer
    (de Bruin's fallback) its tiles' (the 32-bit adds of the partial sums are one per tile and output)."""
    proofs = {k: p.to_json() for k, p in q.plan.proofs.items()}
    return max(proofs.get(name, {}).get("tile_bits") or a.bound.bits
               for name, a in q.arithmetic.items() if a.wq is not None)


def targets(rows: dict) -> dict:
    """Each paper's headline, checked on our data; the gap is measured, not guessed."""
    f, u8 = rows["float"], rows["uniform8"]
    out = {}
    if "lin2016" in rows:
        r = rows["lin2016"]
        eq = r.get("equal_bit_reference") or {}
        red = 1 - r["weight_bits"] / eq["weight_bits"] if eq.get("weight_bits") else None
        ok = red is not None and red >= 0.20 and r["top1"] >= eq["top1"] - 1e-9
        out["lin2016"] = {"target": ">= 20% smaller weights than the best equal-bit-width plan, no accuracy loss",
                          "weight_reduction_vs_equal_bits": red, "top1": r["top1"], "equal_bits_top1": eq.get("top1"),
                          "paired": eq.get("paired_lin_vs_equal"), "met": bool(ok)}
    if "goyal2021" in rows:
        r = rows["goyal2021"]
        mem = 1 - (r["weight_bits"] + r["activation_bits"]) / (u8["weight_bits"] + u8["activation_bits"])
        cost = 1 - r["mult_cost_vs_8bit"]
        loss = f["top1"] - r["top1"]
        out["goyal2021"] = {"target": "< 1 point loss, >= 50% less memory and >= 75% lower multiply cost than 8-bit",
                            "loss_points": 100 * loss, "memory_saving_vs_8bit": mem, "mult_cost_saving_vs_8bit": cost,
                            "met": bool(loss < 0.01 and mem >= 0.5 and cost >= 0.75)}
    if "fxpqnet" in rows:
        r = rows["fxpqnet"]
        loss = f["top1"] - r["top1"]
        out["fxpqnet"] = {"target": ">= 6.4x less memory than float with < 1 point drop",
                          "memory_reduction_vs_float": r["memory_reduction_vs_float"], "loss_points": 100 * loss,
                          "met": bool(r["memory_reduction_vs_float"] >= 6.4 and loss < 0.01)}
    for key in ("debruin2020", "debruin2020_untiled"):
        if key not in rows:
            continue
        r = rows[key]
        loss = f["top1"] - r["top1"]
        out[key] = {"target": "16-bit accumulators within 1 point of float" + (
                        " (whole reductions only, no k-tiles)" if key.endswith("untiled") else ""),
                    "loss_points": 100 * loss, "max_mac_accumulator_bits": r.get("max_mac_accumulator_bits"),
                    "k_tiled_layers": len(r.get("k_tiled_layers") or {}),
                    "met": bool(loss <= 0.01 and (r.get("max_mac_accumulator_bits") or 99) <= 16)}
    for kind, allowed in (("4bit", 0.02), ("ternary", 0.06)):
        key = f"mellempudi2017_{kind}"
        if key in rows:
            r = rows[key]
            loss = f["top1"] - r["top1"]
            out[key] = {"target": f"N=4 {kind} weights within {100 * allowed:.0f} points of float",
                        "loss_points": 100 * loss, "multiplies_replaced": r.get("multiplies_replaced"),
                        "met": bool(loss <= allowed)}
    return out


def cli_row(name, key, args, workdir) -> tuple[dict, object]:
    """``tvm-fxp quantize`` with the CLI's defaults and ``CLI_FLAGS[key]``; the row and the bound plan."""
    from tvm_fxp.cli import build_parser, cmd_quantize

    out = Path(workdir) / f"{name}_{key}"
    argv = ["quantize", str(ROOT / "examples" / "models" / f"{name}.onnx"), "--calib", "fashion-mnist",
            *CLI_FLAGS[key], "--out", str(out)]
    if args.test_size:
        argv += ["--eval-size", str(args.test_size)]
    if args.quiet:
        argv.append("--quiet")
    print(f"[{name}] tvm-fxp {' '.join(argv[:1] + [Path(argv[1]).name] + argv[2:-2])}", flush=True)
    cmd_quantize(build_parser().parse_args(argv))
    row, q = row_from_dir(name, key, out, args)
    row["load_average_1min_after"] = round(os.getloadavg()[0], 2)    # a shared machine: wall times depend on it
    return row, q


def row_from_dir(name, key, out, args) -> tuple[dict, object]:
    """The row of one ``tvm-fxp quantize`` output directory (its summary.json and plan)."""
    from tvm_fxp import deploy

    s = json.loads((Path(out) / "summary.json").read_text())
    q, _ = deploy.load_quantized_dir(out)
    plans = Path(args.out).parent / "plans"
    plans.mkdir(parents=True, exist_ok=True)
    # every chosen plan is kept: bench/latency.py times the de Bruin int16 plans, any row can be re-measured
    shutil.copyfile(out / "plan.json", plans / f"{name}_{key}.json")
    search = s.get("search") or {}
    row = {"top1": s["fxp_top1"], "agreement": s["agreement"], "bit_exact": s["bit_exact"],
           "weight_bits": s["weight_bits"], "activation_bits": s["activation_bits"],
           "memory_reduction_vs_float": s["memory_reduction_vs_float"], "mult_cost_vs_8bit": s["mult_cost_vs_8bit"],
           "max_accumulator_bits": s["max_accumulator_bits"], "max_mac_accumulator_bits": mac_accumulator_bits(q),
           "k_tiled_layers": k_tiled_layers(q), "accumulator_policy": s["accumulator_policy"],
           "cli": "tvm-fxp quantize MODEL --calib fashion-mnist " + " ".join(CLI_FLAGS[key]),
           "float_top1": s["float_top1"], "quantize_wall_s": s["wall_s"],
           "wall_s": search.get("wall_s", 0.0), "evaluations": search.get("evaluations"),
           "search": search or None, "bits": {k: f.bits for k, f in q.plan.tensors.items()},
           "test_data": s["data_source"]}
    if search:
        est = search["estimate"]
        row["val_top1"] = est["fxp_top1"]
        row["val_float_top1"] = est["float_top1"]
        row["val_loss_points"] = 100 * (est["float_top1"] - est["fxp_top1"])
        row["test_loss_points"] = 100 * (s["float_top1"] - s["fxp_top1"])
    if "multiplies_replaced" in q.plan.config:
        row["multiplies_replaced"] = q.plan.config["multiplies_replaced"]
    return row, q


def run_model(name, args) -> dict:
    import tvm_fxp
    from tvm_fxp.calibrate import calibrate
    from tvm_fxp.datasets import fashion_mnist
    from dataclasses import fields

    from tvm_fxp.methods.lin2016 import Lin2016, build_plan

    rows = {}
    with tempfile.TemporaryDirectory(prefix="methods_") as work:
        baseline = ["uniform8"]
        if args.merge and args.keep_baselines:
            old = json.loads(Path(args.out).read_text())["models"][name]["rows"]
            rows, baseline = {"float": old["float"], "uniform8": old["uniform8"]}, []
        for key in baseline + [k for k in CLI_FLAGS if k != "uniform8" and
                                   (k in args.methods or k.rsplit("_", 1)[0] in args.methods)]:
            t = time.time()
            if args.from_dirs:     # rows of finished `tvm-fxp quantize` runs (MODEL_KEY directories), not re-run
                d = Path(args.from_dirs) / f"{name}_{key}"
                if not (d / "summary.json").exists():
                    print(f"[{name}] {key}: no finished run in {d}, row left out", flush=True)
                    continue
                row, q = row_from_dir(name, key, d, args)
                (Path(args.out).parent / "plans").mkdir(parents=True, exist_ok=True)
                shutil.copyfile(d / "plan.json", Path(args.out).parent / "plans" / f"{name}_{key}.json")
            else:
                row, q = cli_row(name, key, args, work)
            rows[key] = row
            print(f"   top1 {row['top1']:.4f} (val estimate {row.get('val_top1', float('nan')):.4f})  weight bits "
                  f"{row['weight_bits']}  mult {row['mult_cost_vs_8bit']:.3f}  acc {row['max_accumulator_bits']}  "
                  f"search {row['wall_s']:.0f}s / {row['evaluations']} evaluations  ({time.time() - t:.0f}s in all)  "
                  f"bit-exact {row['bit_exact']}", flush=True)
            if key == "uniform8":
                lg = q.graph
                rows = {"float": {"top1": row["float_top1"], "agreement": 1.0, "weight_bits": 32 * sum(
                    int(np.prod(s)) for k, (kind, _, s) in lg.tensors().items() if kind in ("weight", "bias")),
                    "activation_bits": 32 * sum(int(np.prod(s)) for k, (kind, _, s) in lg.tensors().items()
                                                if kind not in ("weight", "bias")), "mult_cost_vs_8bit": 16.0,
                    "max_accumulator_bits": None, "wall_s": 0.0, "bit_exact": None}, **rows}
            if key == "lin2016":
                # the paper's reference: the smallest equal bit-width plan within budget, the CLI's calibration
                eq_bits = q.plan.config.get("equal_bits")
                test = fashion_mnist("test", limit=args.test_size)
                stats = calibrate(q.prepared, q.graph, fashion_mnist("train", limit=500).inputs, progress=False)
                float_out = tvm_fxp.Runner(tvm_fxp.build(q.prepared)).run(test.inputs)
                cfg = Lin2016(**{f.name: q.plan.config[f.name] for f in fields(Lin2016) if f.name in q.plan.config})
                assert not cfg.correct_biases, "the CLI's lin2016 does not correct biases: the reference would differ"
                eqq = tvm_fxp.bind_plan(q.prepared, q.graph, build_plan(q.graph, stats, cfg, {
                    l.name: eq_bits for l in q.graph.layers.values() if l.weight is not None}), stats)
                ref, eq_out = measure(eqq, test.inputs, test.labels, float_out)
                # the chosen plan against the reference image by image (its simulation: bit-exact with the build)
                lin_out = tvm_fxp.Runner(tvm_fxp.build(q.simulated())).run(test.inputs)
                row["equal_bit_reference"] = {"bits": eq_bits, **ref,
                                              "paired_lin_vs_equal": paired(lin_out, eq_out, test.labels)}
    return {"rows": rows, "targets": targets(rows), "data": {
        "calibration": "fashion-mnist train[:500]", "search": "fashion-mnist val[:2000] (training-file images "
        "55000-56999, never trained on)", "check": "goyal2021 and fxpqnet confirm their choices on val[2000:4000] "
        "(training-file images 57000-58999); debruin2020 and lin2016 score their candidates on val[:4000]",
        "test": rows["uniform8"]["test_data"]}}


def plot(results, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(6 * len(results), 4.5), squeeze=False)
    for ax, (name, r) in zip(axes[0], results.items()):
        for i, (m, row) in enumerate(r["rows"].items()):
            ax.scatter(row["weight_bits"] / 8192, 100 * row["top1"], s=50, color=f"C{i}", label=m)
        ax.set_xscale("log")
        ax.set_xlabel("weight memory (KiB, log)")
        ax.set_ylabel("test top-1 (%)")
        ax.set_title(name)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["fmnist_vgg", "fmnist_resnet"])
    ap.add_argument("--methods", nargs="+",
                    default=["mellempudi2017", "lin2016", "goyal2021", "fxpqnet", "debruin2020",
                             "debruin2020_untiled"])
    ap.add_argument("--test-size", type=int, default=None, help="measure on the first N test images only")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "methods.json"))
    ap.add_argument("--quiet", action="store_true")
    ap.add_argument("--from-dirs", default=None,
                    help="build the rows from finished quantize directories DIR/MODEL_KEY instead of running them")
    ap.add_argument("--merge", action="store_true", help="keep the other methods' rows of the existing results")
    ap.add_argument("--keep-baselines", action="store_true",
                    help="with --merge: keep the float and uniform8 rows of the existing results (not re-run)")
    args = ap.parse_args(argv)
    t0 = time.time()
    load_start = os.getloadavg()    # wall times depend on the machine's load (shared with other jobs): recorded
    results = {name: run_model(name, args) for name in args.models}
    out = Path(args.out)
    if args.merge and out.exists():
        # keep the other methods' rows of the previous run (same data), replace the ones run now
        old = json.loads(out.read_text())
        for name, r in results.items():
            prev = old.get("models", {}).get(name)
            if prev:
                merged = {k: v for k, v in prev["rows"].items()}
                merged.update(r["rows"])
                r["rows"] = merged
                r["targets"] = targets(merged)
        # the previous file's model order first, then models it did not have
        results = {**{n: results.get(n, prev) for n, prev in old.get("models", {}).items()}, **results}
    load = {"start": round(load_start[0], 2), "end": round(os.getloadavg()[0], 2)}
    partial = {}
    if args.merge and out.exists():    # when and under what load each merged method's rows were measured
        partial = old.get("partial_runs", {})
        for name, r in results.items():
            for k in r["rows"]:
                if k in args.methods or k.rsplit("_", 1)[0] in args.methods:
                    partial.setdefault(name, {})[k] = {"date": time.strftime("%Y-%m-%d"),
                                                       "wall_s": round(time.time() - t0, 1), "load_average_1min": load}
    out.parent.mkdir(parents=True, exist_ok=True)
    from tvm_fxp.cli import build_parser

    defaults = build_parser().parse_args(["quantize", "m.onnx", "--calib", "fashion-mnist", "--out", "o"])
    out.write_text(json.dumps({"date": time.strftime("%Y-%m-%d"), "time_limit_s": defaults.time_limit,
                               "search_size": defaults.search_size, "calib_size": defaults.calib_size,
                               "search_split": "val", "wall_s": time.time() - t0,
                               "load_average_1min": load,
                               "methods_run": args.methods if args.merge else "all", "models": results,
                               **({"partial_runs": partial} if partial else {})},
                              indent=1, default=float) + "\n")
    plot(results, out.with_suffix(".png"))
    for name, r in results.items():
        print(f"\n== {name} ({r['data']['test']})")
        print(f"{'method':22s} {'top1':>7s} {'val est':>7s} {'agree':>7s} {'w KiB':>8s} {'act KiB':>8s} {'mult/8b':>8s} "
              f"{'acc':>4s} {'evals':>5s} {'s':>6s} exact")
        for m, row in r["rows"].items():
            acc = row["max_accumulator_bits"]
            print(f"{m:22s} {row['top1']:7.4f} {row.get('val_top1') or float('nan'):7.4f} {row['agreement']:7.4f} "
                  f"{row['weight_bits'] / 8192:8.1f} {row['activation_bits'] / 8192:8.1f} "
                  f"{row['mult_cost_vs_8bit']:8.3f} {acc if acc else '-':>4} {row.get('evaluations') or '-':>5} "
                  f"{row['wall_s']:6.0f} {row['bit_exact']}")
        for m, t in r["targets"].items():
            print(f"  target {m}: {'MET' if t['met'] else 'MISSED'}  {json.dumps({k: v for k, v in t.items() if k != 'met'}, default=float)}")
    print(f"written: {out} and {out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
