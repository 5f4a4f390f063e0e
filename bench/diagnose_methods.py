"""Why a method's plan loses accuracy, measured: per-layer isolated loss of every saved plan.

    .venv/bin/python bench/diagnose_methods.py [--test-size 2000] [--models fmnist_vgg ...] [--methods fxpqnet ...]

Reads the plans ``bench/methods.py`` saved (``bench/results/plans/MODEL_METHOD.json``).  For each plan and
each weighted layer, the layer's operands (its input activation, weights and bias) take the plan's formats
while every other tensor stays at 16 bits; the top-1 lost against float on the first ``--test-size`` test
images is that layer's *isolated loss*; "(other tensors)" does the same for the tensors that are no weighted
layer's operand (the logits, pool and residual outputs).  The layers with the largest isolated losses are where the plan's
accuracy goes (losses are not additive, but the ranking says which layer's formats to blame).  For the
ternary plans it also records each clustered layer's relative weight error ``|W - Q(W)| / |W|`` and the
accuracy of the same allocation with one filter per cluster (N=1), which separates the cost of the ternary
levels from the cost of sharing a scale.  Writes ``bench/results/methods_diagnostics.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def diagnose_model(name, args) -> dict:
    import tvm_fxp
    from tvm_fxp.api import make_evaluator
    from tvm_fxp.calibrate import calibrate
    from tvm_fxp.datasets import fashion_mnist
    from tvm_fxp.methods.evaluate import clamp_biases, uniform_plan
    from tvm_fxp.methods.mellempudi2017 import Mellempudi2017, allocate as mell_allocate
    from tvm_fxp.plan import Plan

    prepared, lg = tvm_fxp.load_model(ROOT / "examples" / "models" / f"{name}.onnx")
    stats = calibrate(prepared, lg, fashion_mnist("train", limit=500).inputs, progress=False)
    test = fashion_mnist("test", limit=args.test_size)
    ev = make_evaluator(prepared, lg, stats, test.inputs, test.labels, progress=False)
    base = uniform_plan(lg, stats, 16)
    weighted = [l for l in lg.layers.values() if l.weight is not None]
    out = {"float_top1": ev.float_top1, "uniform16_loss_points": 100 * ev.loss(base), "plans": {}}
    for path in sorted((Path(args.results) / "plans").glob(f"{name}_*.json")):
        method = path.stem[len(name) + 1:]
        if args.methods is not None and method not in args.methods:
            continue
        plan = Plan.load(path)
        row = {"loss_points": 100 * ev.loss(plan), "layers": {}}
        for layer in weighted:
            keys = [lg.layers[layer.inputs[0]].output_key, layer.weight_key] + \
                   ([layer.bias_key] if layer.bias is not None else [])
            trial = base
            for k in keys:
                trial = trial.with_format(k, plan[k])
            trial = clamp_biases(lg, trial)
            w = plan[layer.weight_key]
            info = {"isolated_loss_points": round(100 * ev.loss(trial), 3), "input": str(plan[keys[0]]),
                    "weight": str(w), "input_bits": plan[keys[0]].bits, "weight_bits": w.bits,
                    "macs_share": round(layer.macs / sum(l.macs for l in weighted), 4)}
            proof = plan.proofs[layer.name].to_json() if layer.name in plan.proofs else None
            if proof:
                info["proof_bound_bits"] = proof.get("bound_bits")
            if w.bits <= 4:
                info["weight_rel_error"] = round(float(np.linalg.norm(w.fake_quantize(layer.weight) - layer.weight)
                                                       / np.linalg.norm(layer.weight)), 4)
            row["layers"][layer.name] = info
        operands = {k for l in weighted for k in (lg.layers[l.inputs[0]].output_key, l.weight_key, l.bias_key)}
        rest = [k for k in plan.tensors if k not in operands]
        trial = base
        for k in rest:
            trial = trial.with_format(k, plan[k])
        row["layers"]["(other tensors)"] = {"isolated_loss_points": round(100 * ev.loss(clamp_biases(lg, trial)), 3),
                                            "tensors": {k: str(plan[k]) for k in rest}}
        worst = sorted(row["layers"].items(), key=lambda kv: -kv[1]["isolated_loss_points"])[:2]
        row["worst_layers"] = [k for k, _ in worst]
        if method.startswith("mellempudi2017"):
            kind = method.split("_", 1)[1]
            for n in (1, 4):
                p = mell_allocate(lg, stats, Mellempudi2017(cluster=n, weights=kind))
                row[f"loss_points_cluster{n}"] = round(100 * ev.loss(p), 3)
        out["plans"][method] = row
        print(f"[{name}] {method}: loss {row['loss_points']:.2f} points; worst layers "
              + ", ".join(f"{k} ({row['layers'][k]['isolated_loss_points']:.2f})" for k in row["worst_layers"]),
              flush=True)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["fmnist_vgg", "fmnist_resnet"])
    ap.add_argument("--test-size", type=int, default=2000)
    ap.add_argument("--results", default=str(ROOT / "bench" / "results"))
    ap.add_argument("--methods", nargs="+", default=None,
                    help="only these plans (MODEL_METHOD.json; default: all); the other plans' rows of the existing "
                         "results are kept")
    args = ap.parse_args(argv)
    t0 = time.time()
    res = {"date": time.strftime("%Y-%m-%d"), "test_size": args.test_size,
           "models": {m: diagnose_model(m, args) for m in args.models}}
    res["wall_s"] = round(time.time() - t0, 1)
    out = Path(args.results) / "methods_diagnostics.json"
    if out.exists():   # keep the models not diagnosed in this run
        old = json.loads(out.read_text())
        if old.get("test_size") == args.test_size:
            for name, m in old.get("models", {}).items():
                if name in res["models"] and args.methods is not None:
                    res["models"][name]["plans"] = dict(sorted({**m.get("plans", {}),
                                                                **res["models"][name]["plans"]}.items()))
            # the previous file's model order first, then models it did not have
            res["models"] = {**{n: res["models"].get(n, m) for n, m in old.get("models", {}).items()},
                             **res["models"]}
    out.write_text(json.dumps(res, indent=1, default=float) + "\n")
    print(f"written: {out}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
