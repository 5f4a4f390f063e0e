"""Autotune a quantized model's kernels and build with the result.

    .venv/bin/python examples/tune.py                                  # on this machine (local runner)
    .venv/bin/python examples/tune.py --target rpi4 --rpc 192.168.1.20:9090
    .venv/bin/python examples/tune.py --target rpi4 --tracker 127.0.0.1:9190 --key rpi4   # several boards

The same with the CLI:

    tvm-fxp quantize examples/models/fmnist_vgg.onnx --calib fashion-mnist --accumulator narrow --out build/vgg
    tvm-fxp tune build/vgg --target host --trials 64 --time-limit 300       # -> build/vgg/tuning/
    tvm-fxp compile build/vgg --target host --tuning-db build/vgg/tuning --out build/vgg-tuned

The search space is our kernels' own (x86 VNNI conv: register block, output vectors per tile, flat or row
tiles; NCHW kernels: also vector width, k-unrolling, NCHW unpacking, loop order, epilogue placement), today's
schedule is its starting point and is measured first, and no candidate can change the accumulator the plan
proved: the tuned build gives the same integers.  ``tune`` keeps its records only if the whole model gets
faster (its ``model_check``, printed below).
"""

import argparse
import json
from pathlib import Path

import numpy as np

import tvm_fxp
from tvm_fxp import cli

HERE = Path(__file__).resolve().parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=str(HERE / "models" / "fmnist_vgg.onnx"))
    ap.add_argument("--out", default="build/tune")
    ap.add_argument("--target", default="host")
    ap.add_argument("--trials", type=int, default=32)
    ap.add_argument("--time-limit", type=float, default=300)
    ap.add_argument("--rpc", default=None)
    ap.add_argument("--tracker", default=None)
    ap.add_argument("--key", default=None)
    args = ap.parse_args()
    out = Path(args.out)

    assert cli.main(["quantize", args.model, "--calib", "fashion-mnist", "--calib-size", "256", "--eval-size", "500",
                     "--accumulator", "narrow", "--out", str(out / "model"), "--quiet"]) == 0
    remote = (["--rpc", args.rpc] if args.rpc else []) + \
        (["--tracker", args.tracker, "--key", args.key or ""] if args.tracker else [])
    assert cli.main(["tune", str(out / "model"), "--target", args.target, "--trials", str(args.trials),
                     "--time-limit", str(args.time_limit), *remote]) == 0
    report = json.loads((out / "model" / "tuning" / "tune.json").read_text())
    for name, k in report["kernels"].items():
        print(f"{name:>16}: {k['default_ms']:.4f} ms -> {k['best_ms']:.4f} ms ({k['speedup']}x) {k['best_decisions']}")
    print(f"whole model: {report['model_check']}")
    assert cli.main(["compile", str(out / "model"), "--target", args.target, "--tuning-db",
                     str(out / "model" / "tuning"), "--out", str(out / "tuned")]) == 0
    if args.target == "host":
        from tvm_fxp.datasets import fashion_mnist

        x = fashion_mnist("test", limit=500).inputs
        same = np.array_equal(tvm_fxp.Runner(out / "model" / "model.so").run(x),
                              tvm_fxp.Runner(out / "tuned" / "model.so").run(x))
        print(f"tuned build gives the default build's outputs bit for bit: {same}")


if __name__ == "__main__":
    main()
