"""Can ``tvm.relax.training`` fine-tune here at a usable speed?  One training step (forward + backward, batch
128) of the fmnist_vgg architecture (BN folded: conv+bias+ReLU x4, two max pools, two dense layers, softmax
cross-entropy), differentiated by ``relax.transform.Gradient`` and built for this CPU by ``tvm_fxp.build`` (our
CPU pipeline; no MetaSchedule tuning: that takes hours for a whole backward graph on 2 cores), against the same step
in PyTorch; medians of interleaved repeats.  Writes ``bench/results/relax_training.json``.

    .venv/bin/python bench/relax_training.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
B = 128
SHAPES = {"w1": (16, 1, 3, 3), "b1": (16,), "w2": (16, 16, 3, 3), "b2": (16,), "w3": (32, 16, 3, 3), "b3": (32,),
          "w4": (32, 32, 3, 3), "b4": (32,), "w5": (1568, 128), "b5": (128,), "w6": (128, 10), "b6": (10,)}


def relax_step():
    import tvm
    from tvm import relax

    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((B, 1, 28, 28), "float32"))
    y = relax.Var("y", relax.TensorType((B,), "int64"))
    ps = {k: relax.Var(k, relax.TensorType(s, "float32")) for k, s in SHAPES.items()}
    with bb.function("main", [x, y, *ps.values()]):
        with bb.dataflow():
            h = x
            for i in range(1, 5):
                h = bb.emit(relax.op.nn.conv2d(h, ps[f"w{i}"], padding=1))
                h = bb.emit(relax.op.add(h, relax.op.reshape(ps[f"b{i}"], (1, -1, 1, 1))))
                h = bb.emit(relax.op.nn.relu(h))
                if i in (2, 4):
                    h = bb.emit(relax.op.nn.max_pool2d(h, 2, 2))
            h = bb.emit(relax.op.reshape(h, (B, 1568)))
            h = bb.emit(relax.op.nn.relu(relax.op.add(relax.op.matmul(h, ps["w5"]), ps["b5"])))
            h = bb.emit(relax.op.add(relax.op.matmul(h, ps["w6"]), ps["b6"]))
            loss = bb.emit_output(relax.op.nn.nll_loss(relax.op.nn.log_softmax(h), y))
        bb.emit_func_output(loss)
    mod = bb.get()
    mod = relax.transform.Gradient("main", require_grads=list(ps.values()))(mod)
    t = time.time()
    try:    # tvm-fxp's own CPU pipeline (scheduled conv2d/matmul kernels, vectorized elementwise kernels)
        from tvm_fxp.runtime import build

        ex, how = build(mod), "tvm_fxp.build (our CPU pipeline)"
    except Exception as e:  # noqa: BLE001 -- the backward ops our pipeline does not schedule
        from tvm_fxp.runtime import host_target

        ex, how = tvm.compile(relax.transform.LegalizeOps()(mod), target=host_target()), \
            f"tvm.compile default pipeline (tvm_fxp.build failed: {type(e).__name__})"
    build_s = time.time() - t
    vm = relax.VirtualMachine(ex, tvm.cpu())
    rng = np.random.default_rng(0)
    args = [tvm.runtime.tensor(rng.random((B, 1, 28, 28), dtype=np.float32)),
            tvm.runtime.tensor(rng.integers(0, 10, B).astype(np.int64))]
    args += [tvm.runtime.tensor((rng.standard_normal(s) * 0.1).astype(np.float32)) for s in SHAPES.values()]
    f = vm["main_adjoint"]
    return (lambda: f(*args)), build_s, how


def torch_step():
    import torch
    import torch.nn.functional as F

    torch.manual_seed(0)
    x, y = torch.rand(B, 1, 28, 28), torch.randint(0, 10, (B,))
    ps = {k: (torch.randn(s) * 0.1).requires_grad_() for k, s in SHAPES.items()}

    def step():
        h = x
        for i in range(1, 5):
            h = F.relu(F.conv2d(h, ps[f"w{i}"], ps[f"b{i}"], padding=1))
            if i in (2, 4):
                h = F.max_pool2d(h, 2)
        h = F.relu(h.reshape(B, -1) @ ps["w5"] + ps["b5"])
        loss = F.cross_entropy(h @ ps["w6"] + ps["b6"], y)
        loss.backward()
    return step


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(2)
    rstep, build_s, how = relax_step()
    tstep = torch_step()
    rstep(), tstep()                   # warm up
    times = {"relax": [], "torch": []}
    for _ in range(args.repeats):
        for name, fn in (("relax", rstep), ("torch", tstep)):
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    med = {k: statistics.median(v) for k, v in times.items()}
    out = {"date": time.strftime("%Y-%m-%d"), "batch": B, "repeats": args.repeats, "threads": 2,
           "relax_build_s": round(build_s, 1), "relax_build": how, "median_step_s": med, "relax_over_torch": med["relax"] / med["torch"],
           "epoch_minutes_55000_images": {k: v * (55000 / B) / 60 for k, v in med.items()},
           "note": "float step (no fake-quantization) of the vgg architecture, the same batch; relax: Gradient-transformed, built by relax_build, no MetaSchedule tuning (a whole backward graph takes hours on 2 cores); the machine was shared with other jobs, both sides interleaved"}
    path = ROOT / "bench" / "results" / "relax_training.json"
    path.write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
