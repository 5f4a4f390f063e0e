"""Integer max pools at 224x224 (1 thread, batch 1): TVM's own max_pool2d kernel against ``schedules/pool.py``.

    .venv/bin/python bench/pools.py [--models resnet50_224 squeezenet_224] [--rounds 7] [--out bench/results/pools.json]

Builds each uniform 8-bit model of ``bench/models224.py`` twice in this process -- ``tvm`` (the max pools on
TVM's legalization, as before ``pool.py``) and ``ours`` -- checks both bit-exact against the simulated graph,
then times, interleaved round by round, every max-pool kernel call (``tvm_fxp.runtime.profile``, fastest of 5
within a round) and the whole model's call (the VM's ``main``); medians over the rounds.  The machine may be
shared: read the ratios, not the absolute times.
"""

from __future__ import annotations

import os

os.environ["TVM_NUM_THREADS"] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from unittest import mock  # noqa: E402

import numpy as np  # noqa: E402
import tvm  # noqa: E402
from tvm import relax  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))

import tvm_fxp  # noqa: E402
from models224 import images, write_model  # noqa: E402
from tvm_fxp.calibrate import calibrate  # noqa: E402
from tvm_fxp.methods import uniform  # noqa: E402
from tvm_fxp.runtime import profile  # noqa: E402
from tvm_fxp.schedules import legalize  # noqa: E402


def build(realized, variant: str):
    if variant == "tvm":
        with mock.patch.object(legalize, "max_pool2d_plan_for", lambda *a: None):
            return tvm_fxp.build(realized)
    return tvm_fxp.build(realized)


def bench_model(name: str, tmp: Path, rounds: int) -> dict:
    prepared, lg = tvm_fxp.load_model(write_model(name, tmp))
    x = images(2)
    stats = calibrate(prepared, lg, x, batch_size=2, progress=False)
    q = tvm_fxp.bind_plan(prepared, lg, uniform.allocate(lg, stats, tvm_fxp.Uniform(8)))
    realized = q.realized()
    sim = tvm_fxp.Runner(tvm_fxp.build(q.simulated())).run(x)
    variants = ["tvm", "ours"]
    exes, exact = {}, {}
    for v in variants:
        exes[v] = build(realized, v)
        exact[v] = bool(np.array_equal(tvm_fxp.Runner(exes[v]).run(x), sim))
        print(f"{name} {v}: bit-exact with the simulation: {exact[v]}")
    vms = {v: relax.VirtualMachine(ex, tvm.cpu()) for v, ex in exes.items()}
    pools = {v: {} for v in variants}
    whole = {v: [] for v in variants}
    x1 = tvm.runtime.tensor(x[:1])
    for r in range(rounds):
        for v in (variants if r % 2 == 0 else variants[::-1]):
            k = 0
            for row in profile(exes[v], x[:1], repeats=5):
                if "pool" in row["kernel"]:
                    pools[v].setdefault(f"{k}: {row['shapes'][0]} -> {row['shapes'][-1]}", []).append(row["ms"])
                    k += 1
            vms[v]["main"](x1)
            t0, n = time.perf_counter(), 10
            for _ in range(n):
                vms[v]["main"](x1)
            whole[v].append((time.perf_counter() - t0) / n * 1e3)
    rows = [{"pool": key, **{f"{v}_ms": float(np.median(pools[v][key])) for v in variants}} for key in pools["tvm"]]
    for row in rows:
        row["ours_vs_tvm"] = row["ours_ms"] / row["tvm_ms"]
        print(f"  {row['pool']}: TVM {row['tvm_ms']:.3f} ms, ours {row['ours_ms']:.3f} ms ({row['ours_vs_tvm']:.2f}x)")
    sums = {v: sum(row[f"{v}_ms"] for row in rows) for v in variants}
    calls = {v: float(np.median(whole[v])) for v in variants}
    print(f"  pools {sums['tvm']:.3f} -> {sums['ours']:.3f} ms; whole call {calls['tvm']:.2f} -> {calls['ours']:.2f} ms")
    return {"bit_exact": exact, "pools": rows, "pool_sum_ms": sums, "whole_model_ms": calls,
            "ratios": {"pool_sum": sums["ours"] / sums["tvm"], "whole_model": calls["ours"] / calls["tvm"]}}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="*", default=["resnet50_224", "squeezenet_224"])
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "pools.json"))
    args = p.parse_args(argv)
    result = {"threads": 1, "batch": 1, "rounds": args.rounds, "models": {}}
    with tempfile.TemporaryDirectory() as d:
        for name in args.models:
            result["models"][name] = bench_model(name, Path(d), args.rounds)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    main()
