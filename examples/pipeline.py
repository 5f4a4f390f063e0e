"""tvm-fxp's passes inside your own ``tvm.compile`` flow, with our integer kernels (and, optionally, tuned ones).

    .venv/bin/python examples/pipeline.py [--target host|rpi4] [--tuning-db DIR/tuning]

1. Prepare (fold batch-norm, constants), calibrate, choose formats: a ``Plan``.
2. Your pipeline: ``Annotate(plan)`` then ``Realize("narrow")`` -- the integer-only graph, int16 accumulators
   wherever the plan proves them.
3. ``tvm.compile(..., relax_pipeline=tvm_fxp.schedules.pipeline(target))``: TVM's CPU pipeline
   plus our fused requantize epilogues; ``import tvm_fxp`` registers our conv2d/matmul kernels as the
   legalization of integer conv2d/matmul.  Inside ``tuning.apply_database(dir)`` the kernels take the
   schedules ``tvm-fxp tune`` found.
4. For the Pi, export with the cross compiler (``tvm_fxp.deploy.export_library``); on the host, run it and
   check it against the simulation, bit for bit.
"""

import argparse
import contextlib
from pathlib import Path

import numpy as np
import tvm

import tvm_fxp
from tvm_fxp import deploy
from tvm_fxp.calibrate import calibrate
from tvm_fxp.datasets import fashion_mnist
from tvm_fxp.methods import uniform
from tvm_fxp.passes import Annotate, Prepare, Realize, Simulate, analyze
from tvm_fxp.schedules import tuning
from tvm_fxp.schedules import pipeline as relax_pipeline

HERE = Path(__file__).resolve().parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=str(HERE / "models" / "fmnist_vgg.onnx"))
    ap.add_argument("--target", default="host", help="host | rpi4 | a TVM target dict as JSON")
    ap.add_argument("--tuning-db", default=None, help="a DIR/tuning directory written by `tvm-fxp tune`")
    ap.add_argument("--out", default="build/pipeline")
    args = ap.parse_args()

    mod = Prepare()(tvm_fxp.import_onnx(args.model))
    graph = analyze(mod["main"])
    stats = calibrate(mod, graph, fashion_mnist("train", limit=256).inputs, progress=False)
    plan = uniform.allocate(graph, stats, tvm_fxp.Uniform(bits=8))

    user_pipeline = tvm.transform.Sequential([Annotate(plan), Realize("narrow")])
    integer_mod = user_pipeline(mod)

    target, name = deploy.resolve_target(args.target)
    db = tuning.apply_database(args.tuning_db) if args.tuning_db else contextlib.nullcontext()
    with db as applied:
        ex = tvm.compile(integer_mod, target=target, relax_pipeline=relax_pipeline(target))
    if applied is not None:
        print(f"{applied.count} kernels scheduled from {args.tuning_db}")

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    lib = deploy.export_library(ex, out / "model.so", target)
    print(f"wrote {lib} for {name} ({deploy.target_arch(target)})")
    if not deploy.runs_on_host(target):
        print("run it on the board with `tvm-fxp run` (see examples/rpi4_deploy.py)")
        return
    x = fashion_mnist("test", limit=256)
    got = tvm_fxp.Runner(lib).run(x.inputs)
    sim = tvm_fxp.Runner(tvm_fxp.build(Simulate()(Annotate(plan)(mod)))).run(x.inputs)
    print(f"top-1 {np.mean(got.argmax(1) == x.labels):.4f} on {len(got)} test images; "
          f"bit-exact with the simulation: {np.array_equal(got, sim)}")


if __name__ == "__main__":
    main()
