"""k-tiled de Bruin plans: the tiles fused into one kernel (``schedules/ktiles.py``) vs separate tile kernels.

For each reference model, in one process, ONE thread, batch 1, on this host:

* ``fused``: ``bench/results/plans/{model}_debruin2020.json`` (the accurate k-tiled plan) realized narrow and
  built by ``tvm_fxp.build`` (``FuseKTiles`` rewrites each tiled layer to one int32 kernel where that is faster);
* ``unfused``: the same graph with ``FuseKTiles`` switched off (one kernel per tile, slices and widening adds);
* ``untiled``: ``{model}_debruin2020_untiled.json`` (whole reductions proven in int16; less accurate).

Medians of interleaved repeats (rotating order); ``bit_exact`` of fused and unfused against the simulation on
``--eval-images`` test images, top-1 beside.  Writes ``bench/results/ktiles.json``.

    .venv/bin/python bench/ktiles.py [--models fmnist_vgg fmnist_resnet]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import latency  # noqa: E402  -- sets one thread everywhere before tvm is imported

import argparse  # noqa: E402
import datetime  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
from unittest import mock  # noqa: E402

import numpy as np  # noqa: E402

import tvm_fxp  # noqa: E402
from tvm_fxp import deploy  # noqa: E402
from tvm_fxp.datasets import fashion_mnist  # noqa: E402
from tvm_fxp.passes.realize import realized_accumulators  # noqa: E402
from tvm_fxp.plan import Plan  # noqa: E402
from tvm_fxp.report import top1  # noqa: E402
from tvm_fxp.schedules import ktiles  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def bench_model(name: str, args, test) -> dict:
    prepared, lg = tvm_fxp.load_model(REPO / "examples" / "models" / f"{name}.onnx")
    plans = REPO / "bench" / "results" / "plans"
    q = tvm_fxp.bind_plan(prepared, lg, Plan.load(plans / f"{name}_debruin2020.json"))
    qu = tvm_fxp.bind_plan(prepared, lg, Plan.load(plans / f"{name}_debruin2020_untiled.json"))
    host, _ = deploy.resolve_target("host")
    narrow = q.realized("narrow")
    tiled_layers = {k: v for k, v in realized_accumulators(narrow).items() if "k-tiles" in v}
    counter = ktiles.FuseKTiles()
    with host:
        counter(narrow)
    builds = {"fused": tvm_fxp.build(narrow, host)}
    with mock.patch.object(ktiles, "fusable", lambda call, target: False):
        builds["unfused"] = tvm_fxp.build(narrow, host)
    builds["untiled"] = tvm_fxp.build(qu.realized("narrow"), host)
    x1 = np.ascontiguousarray(test.inputs[:1])
    engines = {k: latency.TvmEngine(e, x1) for k, e in builds.items()}
    sim = latency.TvmEngine(tvm_fxp.build(q.simulated(), host), x1)
    x = test.inputs[:args.eval_images]

    def run(e):
        return np.concatenate([e.predict(x[i:i + 256]) for i in range(0, len(x), 256)])

    outs = {k: run(e) for k, e in engines.items()}
    sim_out = run(sim)
    order = list(engines)
    for e in engines.values():
        e.time_repeat(x1, 100)
    samples = {k: [] for k in order}
    for r in range(args.repeats):
        for k in order[r % len(order):] + order[:r % len(order)]:
            samples[k].append(engines[k].time_repeat(x1, args.number))
    med = {k: statistics.median(v) * 1e3 for k, v in samples.items()}
    labels = test.labels[:args.eval_images]
    return {"tiled_layers": tiled_layers, "layers_fused": counter.fused,
            **{f"{k}_ms": round(v, 5) for k, v in med.items()},
            "fused_over_unfused": round(med["fused"] / med["unfused"], 3),
            "fused_over_untiled": round(med["fused"] / med["untiled"], 3),
            "top1_tiled": top1(outs["fused"], labels), "top1_untiled": top1(outs["untiled"], labels),
            "bit_exact_fused_vs_simulation": bool(np.array_equal(outs["fused"], sim_out)),
            "bit_exact_unfused_vs_simulation": bool(np.array_equal(outs["unfused"], sim_out)),
            "eval_images": int(len(x))}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["fmnist_vgg", "fmnist_resnet"])
    ap.add_argument("--repeats", type=int, default=11)
    ap.add_argument("--number", type=int, default=500)
    ap.add_argument("--eval-images", type=int, default=2000)
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "ktiles.json")
    args = ap.parse_args(argv)
    test = fashion_mnist("test", limit=args.eval_images)
    results = {}
    for name in args.models:
        results[name] = r = bench_model(name, args, test)
        print(f"{name}: {r['layers_fused']}/{len(r['tiled_layers'])} tiled layers fused; fused {r['fused_ms']:.4f} ms, "
              f"unfused {r['unfused_ms']:.4f}, untiled {r['untiled_ms']:.4f} (fused/unfused {r['fused_over_unfused']}, "
              f"fused/untiled {r['fused_over_untiled']}); top-1 tiled {r['top1_tiled']} untiled {r['top1_untiled']}; "
              f"bit-exact {r['bit_exact_fused_vs_simulation']}", flush=True)
    out = {"date": datetime.date.today().isoformat(), "machine": latency.machine_info(),
           "loadavg_at_end": latency.loadavg(),
           "config": {"batch": 1, "threads": 1, "repeats": args.repeats, "number": args.number,
                      "target": "host", "accumulator": "narrow"},
           "models": results}
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
