"""How much each search overfits the images it scored plans on, measured on validation images only.

    .venv/bin/python bench/holdout.py [--models fmnist_vgg ...] [--methods fxpqnet ...] [--merge]

Every search of ``bench/methods.py`` scores its candidates on the first ``search_size`` (2,000) validation
images; goyal2021 also confirms each choice on the next 2,000 (its check split).  Here each chosen plan
(``bench/results/plans/MODEL_METHOD.json``) is simulated on all 5,000 validation images and its top-1 loss
against the float model is split into the search images (what the search saw), the check split (if it had one)
and the rest of the split (images no search decision was made on: 3,000, or 1,000 after a check split).  The
test split is not read.  Writes ``bench/results/holdout.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SEARCHES = ("lin2016", "goyal2021", "fxpqnet", "debruin2020", "debruin2020_untiled")


def main(argv=None) -> int:
    import tvm_fxp
    from tvm_fxp import api
    from tvm_fxp.datasets import TestSplitGuard, fashion_mnist
    from tvm_fxp.metrics import top1
    from tvm_fxp.plan import Plan

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["fmnist_vgg", "fmnist_resnet"])
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "holdout.json"))
    ap.add_argument("--methods", nargs="+", default=list(SEARCHES), choices=SEARCHES,
                    help="the plans to measure (default: every search's)")
    ap.add_argument("--merge", action="store_true",
                    help="keep the other models' and the other methods' rows of the existing results")
    args = ap.parse_args(argv)
    methods = json.loads((ROOT / "bench" / "results" / "methods.json").read_text())
    n = int(methods["search_size"])
    results = {}
    with TestSplitGuard("the hold-out measurement"):
        val = fashion_mnist("val")
        seen, rest = slice(0, n), slice(n, len(val))
        for name in args.models:
            prepared, lg = api.load_model(ROOT / "examples" / "models" / f"{name}.onnx")
            fl = tvm_fxp.Runner(tvm_fxp.build(prepared)).run(val.inputs)
            rows = {}
            for m in args.methods:
                p = ROOT / "bench" / "results" / "plans" / f"{name}_{m}.json"
                if m not in methods["models"][name]["rows"] or not p.exists():
                    continue
                q = api.bind_plan(prepared, lg, Plan.load(p))
                out = tvm_fxp.Runner(tvm_fxp.build(q.simulated())).run(val.inputs)
                checked = ((methods["models"][name]["rows"][m].get("search") or {}).get("check") or {}).get("inputs")
                splits = [("search_loss_points", seen), ("heldout_loss_points", rest)]
                if checked:
                    splits = [("search_loss_points", seen), ("check_loss_points", slice(n, n + checked)),
                              ("heldout_loss_points", slice(n + checked, len(val)))]
                rows[m] = {s: 100 * (top1(fl[sl], val.labels[sl]) - top1(out[sl], val.labels[sl]))
                           for s, sl in splits}
                rows[m]["heldout_images"] = len(val) - n - (checked or 0)
                rows[m]["test_loss_points"] = 100 * (methods["models"][name]["rows"]["float"]["top1"]
                                                     - methods["models"][name]["rows"][m]["top1"])
                print(f"[{name}] {m}: loss on the {n} search images {rows[m]['search_loss_points']:.2f} points, on "
                      f"the other {rows[m]['heldout_images']} validation images {rows[m]['heldout_loss_points']:.2f}, on test "
                      f"{rows[m]['test_loss_points']:.2f}", flush=True)
            results[name] = {"float_search_top1": top1(fl[seen], val.labels[seen]),
                             "float_heldout_top1": top1(fl[rest], val.labels[rest]), "rows": rows}
    if args.merge and Path(args.out).exists():
        old = json.loads(Path(args.out).read_text())["models"]
        for name, r in results.items():
            r["rows"] = {**old.get(name, {}).get("rows", {}), **r["rows"]}
        results = {**old, **results}
    Path(args.out).write_text(json.dumps({"date": time.strftime("%Y-%m-%d"), "search_images": n,
                                          "heldout_images": len(val) - n, "models": results}, indent=1) + "\n")
    print(f"written: {args.out}")
    return 0


if __name__ == "__main__":
    sys.path[0] = str(ROOT)
    sys.exit(main())
