"""Side-by-side comparison of the precision-allocation methods on both reference models.

    .venv/bin/python bench/methods.py [--time-limit 240] [--search-size 512] [--models fmnist_vgg ...]

For each model: calibrate on 500 Fashion-MNIST training images; every search scores its candidates on
``--search-size`` further (held-out) *training* images (top-1 with labels, except FxP-QNet, which is
label-free by design); the chosen plan is then realized (int16 accumulators for de Bruin) and measured on
the test split (all 10,000 images with Debian's dataset-fashion-mnist), with the simulation checked bit for
bit against the integer graph.  Rows: float, uniform 8-bit, and each method.  Columns: top-1, agreement with
float, weight memory, activation memory, multiply cost relative to all-8-bit, widest accumulator, wall time.
Each paper's headline target is checked and the gap printed.  Writes ``bench/results/methods.json`` and
``bench/results/methods.png`` (accuracy against weight memory).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def measure(q, x, y, float_out, accumulator="wide") -> dict:
    import tvm_fxp
    from tvm_fxp.report import agreement, plan_costs, top1

    real = tvm_fxp.Runner(tvm_fxp.build(q.realized(accumulator))).run(x)
    sim = tvm_fxp.Runner(tvm_fxp.build(q.simulated())).run(x)
    costs = plan_costs(q)
    return {"top1": top1(real, y), "agreement": agreement(float_out, real), "bit_exact": bool(np.array_equal(sim, real)),
            "weight_bits": costs["weight_bits"], "activation_bits": costs["activation_bits"],
            "memory_reduction_vs_float": costs["memory_reduction_vs_float"],
            "mult_cost_vs_8bit": costs["mult_cost_vs_8bit"], "max_accumulator_bits": costs["max_accumulator_bits"],
            "max_mac_accumulator_bits": mac_accumulator_bits(q),
            "k_tiled_layers": {k: {"tiles": v["tiles"], "k": v["k"], "tile_bits": v["tile_bits"]}
                               for k, v in ((k, p.to_json()) for k, p in q.plan.proofs.items()) if "tiles" in v},
            "accumulator_policy": accumulator}


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
                          "met": bool(ok)}
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


def save_plan(plan, model, method, args):
    """Every chosen plan is kept (``bench/results/plans/MODEL_METHOD.json``): ``bench/latency.py`` times the de
    Bruin int16 plans, and any row can be re-measured without re-running its search."""
    d = Path(args.out).parent / "plans"
    d.mkdir(parents=True, exist_ok=True)
    plan.save(d / f"{model}_{method}.json")


def run_model(name, args) -> dict:
    import tvm_fxp
    from tvm_fxp.api import make_evaluator
    from tvm_fxp.calibrate import calibrate
    from tvm_fxp.datasets import fashion_mnist
    from tvm_fxp.methods import get_method
    from tvm_fxp.methods.debruin2020 import DeBruin2020
    from tvm_fxp.methods.fxpqnet import FxpQNet
    from tvm_fxp.methods.goyal2021 import Goyal2021
    from tvm_fxp.methods.lin2016 import Lin2016, build_plan
    from tvm_fxp.methods.uniform import Uniform, allocate as uniform_allocate
    from tvm_fxp.report import top1

    path = ROOT / "examples" / "models" / f"{name}.onnx"
    train = fashion_mnist("train", limit=500 + args.search_size)
    calib_x = train.inputs[:500]
    search_x, search_y = train.inputs[500:], train.labels[500:]
    test = fashion_mnist("test", limit=args.test_size)
    prepared, lg = tvm_fxp.load_model(path)
    stats = calibrate(prepared, lg, calib_x, progress=False)
    float_out = tvm_fxp.Runner(tvm_fxp.build(prepared)).run(test.inputs)
    rows = {"float": {"top1": top1(float_out, test.labels), "agreement": 1.0, "weight_bits": 32 * sum(
        int(np.prod(s)) for k, (kind, _, s) in lg.tensors().items() if kind in ("weight", "bias")),
        "activation_bits": 32 * sum(int(np.prod(s)) for k, (kind, _, s) in lg.tensors().items()
                                    if kind not in ("weight", "bias")), "mult_cost_vs_8bit": 16.0,
        "max_accumulator_bits": None, "wall_s": 0.0, "bit_exact": None}}
    t = time.time()
    q = tvm_fxp.bind_plan(prepared, lg, uniform_allocate(lg, stats, Uniform(8)), stats)
    rows["uniform8"] = measure(q, test.inputs, test.labels, float_out) | {"wall_s": time.time() - t}
    configs = {"lin2016": Lin2016(), "goyal2021": Goyal2021(), "fxpqnet": FxpQNet(),
               "debruin2020": DeBruin2020(acc_bits=16), "debruin2020_untiled": DeBruin2020(acc_bits=16, max_tiles=0)}
    for kind in ("4bit", "ternary"):
        if "mellempudi2017" not in args.methods:
            break
        from tvm_fxp.methods.mellempudi2017 import Mellempudi2017

        t = time.time()
        plan = get_method("mellempudi2017").allocate(lg, stats, Mellempudi2017(cluster=4, weights=kind))
        q = tvm_fxp.bind_plan(prepared, lg, plan, stats)
        row = measure(q, test.inputs, test.labels, float_out, "narrow") | {"wall_s": time.time() - t}
        row["multiplies_replaced"] = plan.config["multiplies_replaced"]
        save_plan(plan, name, f"mellempudi2017_{kind}", args)
        rows[f"mellempudi2017_{kind}"] = row
        print(f"[{name}] mellempudi2017 N=4 {kind}: top1 {row['top1']:.4f}  replaced {row['multiplies_replaced']:.3f}"
              f"  bit-exact {row['bit_exact']}", flush=True)
    for method in (m for m in args.methods if m != "mellempudi2017"):
        config = configs[method]
        print(f"[{name}] {method} ...", flush=True)
        t = time.time()
        labels = None if getattr(config, "label_free", False) else search_y
        ev = make_evaluator(prepared, lg, stats, search_x, labels, args.time_limit, progress=not args.quiet)
        plan = get_method(config.name).allocate(lg, stats, config, ev)
        q = tvm_fxp.bind_plan(prepared, lg, plan, stats)
        wall = time.time() - t
        save_plan(plan, name, method, args)
        row = measure(q, test.inputs, test.labels, float_out, "narrow" if config.name == "debruin2020" else "wide")
        row.update({"wall_s": wall, "evaluations": ev.evaluations, "timed_out": ev.out_of_time(),
                    "time_limit_s": args.time_limit,
                    "bits": {k: f.bits for k, f in plan.tensors.items()}})
        if method == "lin2016":
            eq_bits = plan.config.get("equal_bits")
            eqq = tvm_fxp.bind_plan(prepared, lg, build_plan(lg, stats, config, {
                l.name: eq_bits for l in lg.layers.values() if l.weight is not None}), stats)
            row["equal_bit_reference"] = {"bits": eq_bits, **measure(eqq, test.inputs, test.labels, float_out)}
        rows[method] = row
        print(f"   top1 {row['top1']:.4f}  weight bits {row['weight_bits']}  mult {row['mult_cost_vs_8bit']:.3f}"
              f"  acc {row['max_accumulator_bits']}  {wall:.0f}s  bit-exact {row['bit_exact']}", flush=True)
    return {"rows": rows, "targets": targets(rows), "data": {"calibration": "fashion-mnist train[:500]",
            "search": f"fashion-mnist train[500:{500 + args.search_size}]", "test": test.source}}


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
    ap.add_argument("--time-limit", type=float, default=240.0, help="seconds per search")
    ap.add_argument("--search-size", type=int, default=512)
    ap.add_argument("--test-size", type=int, default=None)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "methods.json"))
    ap.add_argument("--quiet", action="store_true")
    ap.add_argument("--merge", action="store_true", help="keep the other methods' rows of the existing results")
    args = ap.parse_args(argv)
    t0 = time.time()
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
        for name, prev in old.get("models", {}).items():
            results.setdefault(name, prev)
        args.time_limit = max(args.time_limit, old.get("time_limit_s") or 0)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"date": time.strftime("%Y-%m-%d"), "time_limit_s": args.time_limit,
                               "search_size": args.search_size, "wall_s": time.time() - t0, "models": results},
                              indent=1, default=float) + "\n")
    plot(results, out.with_suffix(".png"))
    for name, r in results.items():
        print(f"\n== {name} ({r['data']['test']})")
        print(f"{'method':12s} {'top1':>7s} {'agree':>7s} {'w KiB':>8s} {'act KiB':>8s} {'mult/8b':>8s} {'acc':>4s} {'s':>6s} exact")
        for m, row in r["rows"].items():
            acc = row["max_accumulator_bits"]
            print(f"{m:12s} {row['top1']:7.4f} {row['agreement']:7.4f} {row['weight_bits'] / 8192:8.1f} "
                  f"{row['activation_bits'] / 8192:8.1f} {row['mult_cost_vs_8bit']:8.3f} {acc if acc else '-':>4} "
                  f"{row['wall_s']:6.0f} {row['bit_exact']}")
        for m, t in r["targets"].items():
            print(f"  target {m}: {'MET' if t['met'] else 'MISSED'}  {json.dumps({k: v for k, v in t.items() if k != 'met'}, default=float)}")
    print(f"written: {out} and {out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
