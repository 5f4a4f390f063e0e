"""Lin 2016's target (>= 20% smaller than the best equal-bit-width plan, no accuracy loss) under the levers that
change how accurate each plan is: measured weight steps, bin-averaged activation error, bias correction.

    .venv/bin/python bench/lin_levers.py [--models fmnist_resnet ...] [--variants paper measured_weight_steps ...]

Each variant runs ``tvm_fxp.methods.lin2016.allocate`` exactly as the CLI does (calibration on train[:500],
plans scored on val[:2000] pooled with the check split val[2000:4000]), with one of ``Lin2016``'s non-default
options.  The rule is unchanged: the reference is the narrowest equal bit-width within the 1-point budget, the
choice the smallest allocation no less accurate than it.  Every lever applies to the equal-bit-width plans as
well (the comparison stays fair), so it moves the reference too.  Both the chosen plan and its reference are
then scored on val[4000:] (1,000 images no decision was made on).  Validation only: the test split is not read.
Writes ``bench/results/lin_levers.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = {
    "paper": {},
    "measured_weight_steps": {"weight_step": "measured"},
    "bin_averaged_activation_error": {"act_error": "bins"},
    "measured_weight_steps+bin_averaged_activation_error": {"weight_step": "measured", "act_error": "bins"},
    "bias_correction": {"correct_biases": True},
}


def run_model(name, variants) -> dict:
    from tvm_fxp import api
    from tvm_fxp.calibrate import calibrate
    from tvm_fxp.costs import weight_bits
    from tvm_fxp.datasets import fashion_mnist
    from tvm_fxp.metrics import top1
    from tvm_fxp.methods.correction import corrected_plan
    from tvm_fxp.methods.evaluate import Evaluator
    from tvm_fxp.methods.lin2016 import Lin2016, allocate, build_plan

    prepared, lg = api.load_model(ROOT / "examples" / "models" / f"{name}.onnx")
    stats = calibrate(prepared, lg, fashion_mnist("train", limit=500).inputs, batch_size=256, progress=False)
    val = fashion_mnist("val")
    n, held = 2000, slice(4000, len(val))
    base = api.make_evaluator(prepared, lg, stats, val.inputs[:n], val.labels[:n], progress=False,
                              check_inputs=val.inputs[n:2 * n], check_labels=val.labels[n:2 * n])
    sim = base.sim
    float_held = top1(api.Runner(api.build(prepared)).run(val.inputs[held]), val.labels[held])
    rows = {}
    for v in variants:
        t0 = time.time()
        ev = Evaluator(sim, base.inputs, base.float_out, base.labels)
        ev.check = Evaluator(sim, base.check.inputs, base.check.float_out, base.check.labels)
        cfg = Lin2016(**VARIANTS[v])
        plan = allocate(lg, stats, cfg, ev)
        c = plan.config
        eq = build_plan(lg, stats, cfg, {l.name: c["equal_bits"] for l in lg.layers.values() if l.weight is not None})
        if cfg.correct_biases:
            eq = corrected_plan(lg, eq, sim, ev.inputs)

        def held_loss(p):
            return 100 * (float_held - top1(sim.outputs(p, val.inputs[held]), val.labels[held]))

        wb = weight_bits(lg, plan)
        chosen = min((o for o in c["trace"]["offsets"] if o["weight_bits"] == wb), key=lambda o: o["loss"])
        rows[v] = {"options": VARIANTS[v],
                   "equal_bits": [{"bits": t["bits"], "loss_points": 100 * t["loss"], "weight_bits": t["weight_bits"]}
                                  for t in c["trace"]["equal_bits"]],
                   "reference_bits": c["equal_bits"], "reference_weight_bits": c["equal_bit_weight_bits"],
                   "chosen_bits": chosen["bits"], "chosen_weight_bits": wb, "chosen_loss_points": 100 * chosen["loss"],
                   "weight_reduction_vs_equal_bits": 1 - wb / c["equal_bit_weight_bits"],
                   "target_met_on_validation": bool(c["trace"]["target_met"]
                                                    and 1 - wb / c["equal_bit_weight_bits"] >= 0.2),
                   "heldout_loss_points": {"chosen": held_loss(plan), "reference": held_loss(eq)},
                   "evaluations": c["evaluations"], "wall_s": round(time.time() - t0, 1),
                   "load_average_1min_after": round(os.getloadavg()[0], 2)}
        r = rows[v]
        print(f"[{name}] {v}: reference {r['reference_bits']} bits ({r['equal_bits'][-1]['loss_points']:.2f} points; "
              f"one bit less {r['equal_bits'][-2]['loss_points'] if len(r['equal_bits']) > 1 else float('nan'):.2f}), "
              f"chosen {list(r['chosen_bits'].values())} {r['chosen_loss_points']:.2f} points, "
              f"{100 * r['weight_reduction_vs_equal_bits']:.1f}% smaller; held-out chosen "
              f"{r['heldout_loss_points']['chosen']:.2f} vs reference {r['heldout_loss_points']['reference']:.2f} "
              f"({r['wall_s']:.0f} s)", flush=True)
    return {"rows": rows, "heldout_images": held.stop - held.start, "float_heldout_top1": float_held}


def main(argv=None) -> int:
    from tvm_fxp.datasets import TestSplitGuard

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["fmnist_vgg", "fmnist_resnet"])
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "lin_levers.json"))
    ap.add_argument("--merge", action="store_true", help="keep the other models'/variants' rows of the existing file")
    args = ap.parse_args(argv)
    t0, load0 = time.time(), os.getloadavg()[0]
    with TestSplitGuard("the Lin 2016 lever measurement"):
        results = {name: run_model(name, args.variants) for name in args.models}
    out = Path(args.out)
    if args.merge and out.exists():
        old = json.loads(out.read_text())["models"]
        for name, r in results.items():
            r["rows"] = {**(old.get(name) or {}).get("rows", {}), **r["rows"]}
        results = {**old, **results}
    out.write_text(json.dumps({"date": time.strftime("%Y-%m-%d"), "search": "val[:2000] pooled with val[2000:4000]",
                               "heldout": "val[4000:5000]", "wall_s": round(time.time() - t0, 1),
                               "load_average_1min": {"start": round(load0, 2), "end": round(os.getloadavg()[0], 2)},
                               "models": results}, indent=1, default=float) + "\n")
    print(f"written: {out}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
