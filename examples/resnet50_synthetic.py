"""ResNet-50 at 224x224, uniform 8-bit, end to end on synthetic data: wall time and peak memory.

    .venv/bin/python examples/resnet50_synthetic.py [--images 8] [--bits 8] [--out result.json]

The model is generated with onnx.helper (``tests/onnx_graphs.py``: 7x7/2 stem, bottleneck stages 3-4-6-3 with
projection shortcuts, ``Sum`` residuals, batch-norm, global average pool, Gemm to 1000 classes, Softmax) with
random He-initialised weights, so nothing is downloaded.  The script imports and prepares it, calibrates on
``--images`` random images, allocates a uniform plan, builds the simulated and the integer-only modules, runs
both on the calibration images, checks they agree bit for bit and that the integer graph has no float op, and
prints the time of every step and the peak resident memory (``resource.getrusage``).
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import onnx  # noqa: E402

import tvm_fxp  # noqa: E402
from tvm_fxp.calibrate import calibrate  # noqa: E402
from tvm_fxp.methods import uniform  # noqa: E402
from tvm_fxp.passes import float_ops_in_integer_graph  # noqa: E402
from onnx_graphs import Net, resnet50  # noqa: E402


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024   # KiB on Linux


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=8)
    p.add_argument("--bits", type=int, default=8)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--out", default=None, help="also write the result as JSON here")
    args = p.parse_args(argv)

    steps, t0 = {}, time.time()

    def step(name, t):
        steps[name] = round(time.time() - t, 1)
        print(f"{name:>22}: {steps[name]:7.1f} s   (peak RSS {peak_rss_mb():.0f} MiB)", file=sys.stderr, flush=True)
        return time.time()

    t = time.time()
    size = args.image_size
    g = Net([1, 3, size, size], seed=0, opset=13)
    model = g.model(resnet50(g, size))
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "resnet50.onnx"
        onnx.save(model, str(path))
        t = step("generate onnx", t)
        prepared, lg = tvm_fxp.load_model(path)
        t = step("import + prepare", t)
    x = np.random.default_rng(0).normal(0, 1, (args.images, 3, size, size)).astype(np.float32)
    stats = calibrate(prepared, lg, x, batch_size=args.images, progress=False)
    t = step("calibrate", t)
    q = tvm_fxp.bind_plan(prepared, lg, uniform.allocate(lg, stats, tvm_fxp.Uniform(args.bits)))
    t = step("allocate + validate", t)
    sim_mod, real_mod = q.simulated(), q.realized()
    float_ops = float_ops_in_integer_graph(real_mod)
    t = step("simulate + realize", t)
    sim_ex = tvm_fxp.build(sim_mod)
    t = step("build simulated", t)
    real_ex = tvm_fxp.build(real_mod)
    t = step("build integer", t)
    sim_out = tvm_fxp.Runner(sim_ex).run(x, batch_size=args.images)
    t = step("run simulated", t)
    real_out = tvm_fxp.Runner(real_ex).run(x, batch_size=args.images)
    t = step("run integer", t)
    result = {
        "model": "resnet50 (random He weights)", "image_size": size, "calibration_images": args.images,
        "bits": args.bits, "layers": len(lg.layers), "macs_per_image": int(sum(l.macs for l in lg.layers.values())),
        "bit_exact": bool(np.array_equal(sim_out, real_out)), "float_ops_in_integer_graph": len(float_ops),
        "max_accumulator_bits": max(a.bound.bits for a in q.arithmetic.values()),
        "steps_s": steps, "wall_s": round(time.time() - t0, 1), "peak_rss_mib": round(peak_rss_mb()),
    }
    print(json.dumps(result, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    r = main()
    sys.exit(0 if r["bit_exact"] and r["float_ops_in_integer_graph"] == 0 else 1)
