"""AVX2 without VNNI: the proven int16 accumulators (``vpmaddubsw`` + ``vpaddw``) vs the int32 AVX2 path.

For both reference models, the de Bruin 2020 plan whose every layer is proven to fit 16-bit accumulators
(``bench/results/plans/{model}_debruin2020_untiled.json``) is built twice for ``{"kind": "llvm", "mcpu":
"haswell"}`` (AVX2, no AVX-512, no VNNI; it runs on this host) with ``tvm_fxp.build``, and both run here:

- ``acc16``: ``realized()`` (the proven policy: int16 accumulators) -> ``conv2d_avx2``'s ``avx2_acc16`` kernels
  (``vpbroadcastw`` + ``vpmaddubsw`` + ``vpaddw``);
- ``int32_madd``: ``realized("wide")`` (int32) inside ``conv2d_avx2.prefer_madd()`` -> the ``avx2_madd`` kernels,
  the pre-VNNI int32 form (``vpmaddubsw`` + ``vpmaddwd`` with ones + ``vpaddd``; exact here because the same plan
  proves its pair sums too);
- ``int32_generic``: ``realized("wide")`` with the default int32 kernels of ``conv2d_int`` (for reference).

Layers whose input is int8 (the first conv) and the dense layers use the same ``conv2d_int``/``dense_int``
kernels in all builds (int16 or int32 variant).  One process, batch 1, one thread, engines interleaved
round-robin over ``--repeats`` repeats, median ms.  The three builds must give identical outputs (checked on
``--eval-images`` test images; top-1 printed beside the times).  ``acc16_vs_int32_avx2`` = acc16 median /
int32_madd median (goal <= 0.7); ``acc16_vs_int32_avx2_kernel_sum`` (and ``_conv2d_kernels``) the same ratio of
the summed kernel-call times (``kernel_sums``: without the VM's work between calls).  The two kernels' hot loops are also run through llvm-mca-19 for Haswell
(one port for ``vpmaddubsw``/``vpmaddwd``) and this host's model (``inner_loops_mca``).

Usage::

    .venv/bin/python bench/avx2_acc16.py [--repeats 9] [--out bench/results/avx2_acc16.json]
"""

from __future__ import annotations

import os

os.environ["TVM_NUM_THREADS"] = "1"

import argparse  # noqa: E402
import datetime  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import tvm  # noqa: E402
from tvm import relax  # noqa: E402

import tvm_fxp  # noqa: E402
from tvm_fxp.datasets import fashion_mnist  # noqa: E402
from tvm_fxp.plan import Plan  # noqa: E402
from tvm_fxp.schedules import conv2d_avx2, dispatched_kernels  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))   # tools/: assembly tooling of benches and tests (not installed)
HASWELL = {"kind": "llvm", "mcpu": "haswell"}
GOAL = 0.7


def build(q, policy: str, madd: bool):
    """Each kernel called on its own (``per_kernel``), so that ``kernel_sums`` can tell the conv2d kernels
    apart (vgg's kernels would otherwise run as one call, ``schedules/graph.py``)."""
    mod = q.realized(policy)
    target = tvm.target.Target(HASWELL)
    with tvm_fxp.schedules.per_kernel():
        if madd:
            with conv2d_avx2.prefer_madd():
                return tvm_fxp.build(mod, target), dispatched_kernels(mod, target)
        return tvm_fxp.build(mod, target), dispatched_kernels(mod, target)


def time_engines(vms: dict, x1, repeats: int, seconds: float = 0.2) -> dict:
    dev = tvm.cpu()
    arg = tvm.runtime.tensor(np.ascontiguousarray(x1), dev)
    evals, samples = {}, {k: [] for k in vms}
    for name, vm in vms.items():
        t = vm.time_evaluator("main", dev, number=20, repeat=1)(arg).results[0]
        number = max(5, int(seconds / max(t, 1e-6)))
        evals[name] = vm.time_evaluator("main", dev, number=number, repeat=1)
    names = list(vms)
    for r in range(repeats):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            samples[name].append(float(evals[name](arg).results[0]))
    return {k: statistics.median(v) * 1e3 for k, v in samples.items()}, samples


def kernel_sums(builds: dict, x1, rounds: int = 5) -> dict:
    """Per build, the sum over its kernel calls of each call's time on its own arguments
    (``tvm_fxp.runtime.profile``: fastest of 20 runs), median over ``rounds`` interleaved rounds, ms; and the
    same for the conv2d kernels only.  Leaves out the VM's own work between calls, which the whole-model
    times above include."""
    from tvm_fxp.runtime import profile

    sums = {k: {"all": [], "conv2d": []} for k in builds}
    for _ in range(rounds):
        for name, (ex, _) in builds.items():
            rows = profile(ex, x1, repeats=20)
            sums[name]["all"].append(sum(r["ms"] for r in rows))
            sums[name]["conv2d"].append(sum(r["ms"] for r in rows if r["kernel"].startswith("fxp_conv2d")))
    return {k: {part: round(statistics.median(v), 5) for part, v in d.items()} for k, d in sums.items()}


def inner_loops_mca(cpus=("haswell", "rocketlake")) -> dict:
    """llvm-mca-19 cycles per MAC of the two kernels' hot loops (vgg's 32->32 3x3 conv), per x86 model."""
    from tvm_fxp.schedules import conv2d_primfuncs, plan_conv2d
    from tools.asm import llvm_mca, loops

    target = tvm.target.Target(HASWELL)
    out = {}
    for acc, layout in (("int16", "avx2_acc16"), ("int32", "avx2_madd")):
        plan = plan_conv2d((1, 32, 14, 14), (32, 32, 3, 3), "uint8", acc, padding=(1,) * 4, target=target,
                           layout=layout)
        asm = tvm.tirx.build(conv2d_primfuncs(plan, batch=1)[2], target=target).inspect_source("asm")
        hot = max(loops(asm), key=lambda lp: lp.mnemonics.get("vpmaddubsw", 0))
        macs = 32 * hot.mnemonics["vpmaddubsw"]
        out[layout] = {"mnemonics": hot.mnemonics, "macs_per_iteration": macs, "asm": hot.lines}
        for cpu in cpus:
            res = llvm_mca(hot.text, mcpu=cpu, triple="x86_64-linux-gnu")
            out[layout][f"macs_per_cycle_{cpu}"] = round(macs / res.cycles_per_iteration, 2)
    out["acc16_vs_int32_cycles_per_mac"] = {
        cpu: round(out["avx2_madd"][f"macs_per_cycle_{cpu}"] / out["avx2_acc16"][f"macs_per_cycle_{cpu}"], 3)
        for cpu in cpus}
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--eval-images", type=int, default=2000)
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "avx2_acc16.json")
    args = ap.parse_args(argv)
    t0 = time.time()
    test = fashion_mnist("test", limit=args.eval_images)
    out = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
           "target": HASWELL, "host_cpu": tvm.target.codegen.llvm_get_system_cpu(), "goal_acc16_vs_int32": GOAL,
           "models": {}}
    for model in ("fmnist_vgg", "fmnist_resnet"):
        plan_file = REPO / "bench" / "results" / "plans" / f"{model}_debruin2020_untiled.json"
        prepared, lg = tvm_fxp.api.load_model(REPO / "examples" / "models" / f"{model}.onnx")
        q = tvm_fxp.bind_plan(prepared, lg, Plan.load(plan_file))
        builds = {"acc16": build(q, "proven", False), "int32_madd": build(q, "wide", True),
                  "int32_generic": build(q, "wide", False)}
        vms = {k: relax.VirtualMachine(ex, tvm.cpu()) for k, (ex, _) in builds.items()}
        logits = {k: tvm_fxp.Runner(ex).run(test.inputs) for k, (ex, _) in builds.items()}
        identical = all(np.array_equal(logits["acc16"], v) for v in logits.values())
        top1 = float((logits["acc16"].argmax(1) == test.labels).mean())
        med, samples = time_engines(vms, test.inputs[:1], args.repeats)
        ratio = med["acc16"] / med["int32_madd"]
        ks = kernel_sums({k: builds[k] for k in ("acc16", "int32_madd")}, test.inputs[:1])
        out["models"][model] = {
            "plan": str(plan_file.relative_to(REPO)), "top1": top1, "eval_images": int(len(test.inputs)),
            "outputs_identical": identical, "median_ms": {k: round(v, 5) for k, v in med.items()},
            "samples_ms": {k: [round(s * 1e3, 5) for s in v] for k, v in samples.items()},
            "kernels": {k: kern for k, (_, kern) in builds.items()},
            "acc16_vs_int32_avx2": round(ratio, 4), "acc16_vs_int32_generic": round(med["acc16"] / med["int32_generic"], 4),
            "meets_goal": ratio <= GOAL, "kernel_sum_ms": ks,
            "acc16_vs_int32_avx2_kernel_sum": round(ks["acc16"]["all"] / ks["int32_madd"]["all"], 4),
            "acc16_vs_int32_avx2_conv2d_kernels": round(ks["acc16"]["conv2d"] / ks["int32_madd"]["conv2d"], 4)}
        print(f"{model}: top-1 {top1:.4f} (all builds identical: {identical}); acc16 {med['acc16']:.4f} ms, "
              f"int32 madd {med['int32_madd']:.4f} ms, int32 generic {med['int32_generic']:.4f} ms; "
              f"acc16_vs_int32_avx2 {ratio:.3f}; kernel sums {ks}", flush=True)
    out["inner_loops_mca"] = inner_loops_mca()
    print("llvm-mca inner loops, acc16 / int32 cycles per MAC:", out["inner_loops_mca"]["acc16_vs_int32_cycles_per_mac"])
    out["wall_seconds"] = round(time.time() - t0, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
