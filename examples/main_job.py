"""The main job: quantize both bundled reference CNNs to 8-bit uniform fixed point and measure them.

    bash .ci/setup.sh && .venv/bin/python examples/main_job.py

For each model in examples/models/ this runs exactly what a user runs,
``tvm-fxp quantize MODEL --calib fashion-mnist --method uniform --bits 8 --out build/NAME-uniform8``:
calibrate on 500 training images, realize the integer-only graph, build it, and measure float vs fixed-point
top-1 on the Fashion-MNIST test split (all 10,000 images with the Debian package, else the bundled 2,000),
checking the simulation and the integer graph agree bit for bit.  Results go to build/ and to
bench/results/main_job.json (the README's table is generated from that file).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    from tvm_fxp.cli import main as cli

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bits", type=int, default=8)
    ap.add_argument("--out", default=str(ROOT / "build"))
    ap.add_argument("--results", default=str(ROOT / "bench" / "results" / "main_job.json"))
    args = ap.parse_args(argv)
    results = {"date": time.strftime("%Y-%m-%d"), "bits": args.bits, "models": {}}
    for model in sorted((ROOT / "examples" / "models").glob("*.onnx")):
        out = Path(args.out) / f"{model.stem}-uniform{args.bits}"
        print(f"== {model.name} ==", flush=True)
        code = cli(["quantize", str(model), "--calib", "fashion-mnist", "--method", "uniform", "--bits",
                    str(args.bits), "--out", str(out)])
        if code != 0:
            return code
        s = json.loads((out / "summary.json").read_text())
        ref = json.loads(model.with_suffix(".json").read_text()) if model.with_suffix(".json").exists() else {}
        s["float_top1_at_training"] = ref.get("float_test_top1")
        results["models"][model.stem] = s
    Path(args.results).parent.mkdir(parents=True, exist_ok=True)
    Path(args.results).write_text(json.dumps(results, indent=1) + "\n")
    print("\nmodel            float top-1   fxp top-1   drop (pts)  agreement  bit-exact  float ops  mem vs f32  wall s")
    for name, s in results["models"].items():
        print(f"{name:16s} {s['float_top1']:11.4f} {s['fxp_top1']:11.4f} {100 * (s['float_top1'] - s['fxp_top1']):11.2f}"
              f" {s['agreement']:10.4f} {str(s['bit_exact']):>10s} {s['float_ops_in_integer_graph']:10d}"
              f" {s['memory_reduction_vs_float']:10.2f}x {s['wall_s']:7.1f}")
    print(f"data: {next(iter(results['models'].values()))['data_source']}")
    print(f"written: {args.results}")
    ok = all(s["bit_exact"] and s["float_ops_in_integer_graph"] == 0 for s in results["models"].values())
    return 0 if ok else 1


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
