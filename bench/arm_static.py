"""Static performance of the integer kernels on the Raspberry Pi 4 (Cortex-A72), without a Pi.

For each kernel of ``tvm_fxp.schedules`` in its int16-accumulator and int32-accumulator variant, this
script cross-compiles the kernel with TVM for ``{"kind": "llvm", "mtriple": "aarch64-linux-gnu",
"mcpu": "cortex-a72", "mattr": ["+neon"]}``, extracts the hot inner loop from the assembly
(``tools.asm.hot_loop``: the innermost loop with the most vector multiply lanes), counts its
multiply-accumulates per iteration from the instructions themselves (``smlal v0.8h`` = 8, ``smull v0.4s``
= 4, ...) and runs it through ``llvm-mca-19 -mtriple=aarch64-linux-gnu -mcpu=cortex-a72`` for the
steady-state cycles per iteration.  From these:

- ``cycles_per_mac`` = cycles per iteration / MACs per iteration;
- ``int16_vs_int32_cycles`` = int16 cycles per MAC / int32 cycles per MAC (target <= 0.55);
- ``neon_peak_fraction`` = achieved MACs per cycle / the A72's NEON peak for int8 operands (target >= 0.6).

The peak.  The A72 has two 128-bit ASIMD/FP pipes, F0 and F1; integer multiplies and multiply-accumulates
issue only to F0 (Cortex-A72 Software Optimization Guide, section 3.14: ``MUL``/``MLA``/``SMLAL``/``SMULL``
use pipe F0).  The widening forms ``SMLAL``/``SMLAL2``/``SMULL(2)`` (8-byte halves in, eight 16-bit lanes
out) have a throughput of one per cycle; the 128-bit ``MLA .8h`` and any ``.4s`` form do fewer multiplies
per F0 cycle (``MLA .8h``: one per two cycles = 4 lanes/cycle; ``SMLAL .4s``: 4 lanes/cycle).  So the most
int8 x int8 products F0 can form per cycle is one ``SMLAL .8h``: **8 MACs/cycle**, reachable only with
16-bit accumulators.  An int32 accumulator needs either ``SMLAL .4s`` (4 MACs/cycle) or ``SMULL .8h`` plus
two widening adds per 8 products (``SADDW``/``SADDW2``: three F-pipe instructions per 8 MACs, so at best
5.3 MACs/cycle if every add went to F1; LLVM's Cortex-A72 model -- the Cortex-A57 model, where F0 is
``A57UnitW`` -- puts part of them on F0 and gets about 4.2).  Both kernels' fractions are given against
the same 8 MACs/cycle.

The inner loop ignores what lies outside it (block set-up, write-back, the unpacking pass, caches, a
batch-1 dense layer's weight streaming from L2), so ``useful_mac_fraction`` (real MACs / MACs computed,
counting padded lanes and positions) and ``estimated_kernel_macs_per_cycle`` (inner-loop rate times that
fraction) are reported beside them.  llvm-mca models the pipes; a real Pi is the final word.

Usage::

    .venv/bin/python bench/arm_static.py [--out bench/results/arm_static.json] [--show-asm]

Needs ``llvm-mca-19`` (``bash .ci/setup_arm.sh`` installs it).  Runs in well under a minute.
"""

from __future__ import annotations

import argparse
import datetime
import json
import subprocess
import sys
import time
from pathlib import Path

import tvm

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))   # tools/ (assembly tooling for benches and tests, not installed)

from tools.asm import hot_loop, llvm_mca, mca_tool  # noqa: E402
from tvm_fxp.schedules import conv2d_primfuncs, dense_primfuncs, plan_conv2d, plan_dense, preset  # noqa: E402
from tvm_fxp.schedules.targets import RPI4  # noqa: E402
MCPU = "cortex-a72"
TRIPLE = "aarch64-linux-gnu"
PEAK_MACS_PER_CYCLE = 8.0          # one SMLAL .8h per cycle on F0, see the docstring
TARGETS = {"int16_vs_int32_cycles": 0.55, "neon_peak_fraction": 0.6}

# name -> (plan factory(acc, target), description); the first three are fmnist_vgg's convolution shapes
KERNELS = {
    "conv3x3_16to16_28x28_uint8": (
        lambda acc, t: plan_conv2d((1, 16, 28, 28), (16, 16, 3, 3), "uint8", acc, padding=(1, 1, 1, 1), target=t),
        "fmnist_vgg conv2d_2: 3x3, 16->16 channels, 28x28, uint8 activations"),
    "conv3x3_16to32_14x14_uint8": (
        lambda acc, t: plan_conv2d((1, 16, 14, 14), (32, 16, 3, 3), "uint8", acc, padding=(1, 1, 1, 1), target=t),
        "fmnist_vgg conv2d_4: 3x3, 16->32 channels, 14x14"),
    "conv3x3_32to32_14x14_int8": (
        lambda acc, t: plan_conv2d((1, 32, 14, 14), (32, 32, 3, 3), "int8", acc, padding=(1, 1, 1, 1), target=t),
        "3x3, 32->32 channels, 14x14, int8 activations"),
    "conv1x1_s2_32to64_14x14_int8": (
        lambda acc, t: plan_conv2d((1, 32, 14, 14), (64, 32, 1, 1), "int8", acc, strides=(2, 2), target=t),
        "1x1 stride 2 (a resnet shortcut), 32->64 channels"),
    "depthwise3x3_32_14x14_uint8": (
        lambda acc, t: plan_conv2d((1, 32, 14, 14), (32, 1, 3, 3), "uint8", acc, groups=32,
                                   padding=(1, 1, 1, 1), target=t),
        "depthwise 3x3, 32 channels, 14x14 (groups layout)"),
    "dense_1568to128_uint8": (
        lambda acc, t: plan_dense((1, 1568), (1568, 128), "uint8", acc, target=t),
        "fmnist_vgg matmul_0, batch 1"),
    "dense_128to10_uint8": (
        lambda acc, t: plan_dense((1, 128), (128, 10), "uint8", acc, target=t),
        "fmnist_vgg matmul_1, batch 1 (10 outputs padded to 16 lanes)"),
}


def useful_fraction(plan) -> float:
    """Real MACs / MACs the kernel computes (padded lanes and padded positions included)."""
    if hasattr(plan, "out_channels"):
        kh, kw = plan.kernel
        computed = plan.padded_positions * plan.vector_blocks * plan.lanes * plan.in_per_group * kh * kw
        computed *= plan.groups if plan.layout == "channels" else plan.out_per_group
        return plan.macs_per_image / computed
    return plan.macs_per_row / (plan.vector_blocks * plan.lanes * plan.reduce)


def measure(name: str, acc: str, target) -> dict:
    factory, _ = KERNELS[name]
    plan = factory(acc, target)
    funcs = conv2d_primfuncs(plan) if hasattr(plan, "out_channels") else dense_primfuncs(plan)
    asm = tvm.tirx.build(funcs[2], target=target).inspect_source("asm")
    loop = hot_loop(asm)
    mca = llvm_mca(loop.text, mcpu=MCPU, triple=TRIPLE)
    cycles_per_mac = mca.cycles_per_iteration / loop.mul_lanes
    macs_per_cycle = 1.0 / cycles_per_mac
    useful = useful_fraction(plan)
    return {
        "plan": {k: (list(v) if isinstance(v, tuple) else v) for k, v in plan.__dict__.items()},
        "inner_loop_instructions": len(loop.lines),
        "inner_loop_mnemonics": dict(sorted(loop.mnemonics.items())),
        "macs_per_iteration": loop.mul_lanes,
        "cycles_per_iteration": round(mca.cycles_per_iteration, 3),
        "block_rthroughput": mca.block_rthroughput,
        "cycles_per_mac": round(cycles_per_mac, 5),
        "macs_per_cycle": round(macs_per_cycle, 3),
        "neon_peak_fraction": round(macs_per_cycle / PEAK_MACS_PER_CYCLE, 4),
        "resource_pressure_per_iteration": {k: v for k, v in mca.resource_pressure.items() if v},
        "useful_mac_fraction": round(useful, 4),
        "estimated_kernel_macs_per_cycle": round(macs_per_cycle * useful, 3),
        "inner_loop_asm": loop.lines,
    }


def mca_version() -> str:
    out = subprocess.run([mca_tool(), "--version"], capture_output=True, text=True).stdout
    return " ".join(line.strip() for line in out.splitlines() if "version" in line.lower())[:200]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "arm_static.json")
    ap.add_argument("--show-asm", action="store_true", help="print every inner loop's assembly")
    args = ap.parse_args(argv)
    if mca_tool() is None:
        print("llvm-mca-19 not found: run bash .ci/setup_arm.sh (Debian package llvm-19)", file=sys.stderr)
        return 2
    t0 = time.time()
    target = preset("rpi4")
    print(f"peak: {PEAK_MACS_PER_CYCLE:g} MACs/cycle = one SMLAL .8h (8 int16 lanes) per cycle on F0, the A72's only "
          f"integer-multiply pipe; {mca_version()}")
    results = {}
    for name, (_, desc) in KERNELS.items():
        entry = {"description": desc}
        for acc in ("int16", "int32"):
            entry[acc] = measure(name, acc, target)
        entry["int16_vs_int32_cycles"] = round(entry["int16"]["cycles_per_mac"] / entry["int32"]["cycles_per_mac"], 4)
        entry["neon_peak_fraction"] = entry["int16"]["neon_peak_fraction"]
        entry["meets_targets"] = (entry["int16_vs_int32_cycles"] <= TARGETS["int16_vs_int32_cycles"]
                                  and entry["neon_peak_fraction"] >= TARGETS["neon_peak_fraction"])
        results[name] = entry

    head = (f"{'kernel':<30} {'acc':<6} {'MAC/it':>6} {'cyc/it':>7} {'cyc/MAC':>8} {'MAC/cyc':>7} "
            f"{'peak':>6} {'useful':>6}  {'16/32':>6}  inner-loop multiplies")
    print(head)
    print("-" * len(head))
    for name, entry in results.items():
        for acc in ("int16", "int32"):
            r = entry[acc]
            muls = ", ".join(f"{k} x{v}" for k, v in r["inner_loop_mnemonics"].items()
                             if k.startswith(("smlal", "umlal", "smull", "umull", "mla", "mul", "saddw", "sadalp")))
            ratio = f"{entry['int16_vs_int32_cycles']:6.3f}" if acc == "int16" else " " * 6
            print(f"{name if acc == 'int16' else '':<30} {acc:<6} {r['macs_per_iteration']:>6} "
                  f"{r['cycles_per_iteration']:>7.2f} {r['cycles_per_mac']:>8.4f} {r['macs_per_cycle']:>7.2f} "
                  f"{r['neon_peak_fraction']:>6.3f} {r['useful_mac_fraction']:>6.3f}  {ratio}  {muls}")
            if args.show_asm:
                print("\n".join("      " + line for line in r["inner_loop_asm"]))
    ok = sum(e["meets_targets"] for e in results.values())
    print(f"\n{ok}/{len(results)} kernels meet int16_vs_int32_cycles <= {TARGETS['int16_vs_int32_cycles']} and "
          f"neon_peak_fraction >= {TARGETS['neon_peak_fraction']}")

    out = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "tvm_version": tvm.__version__,
        "llvm_mca": mca_version(),
        "target": RPI4,
        "mca_cpu": MCPU,
        "peak_macs_per_cycle": PEAK_MACS_PER_CYCLE,
        "peak_reasoning": ("A72: integer multiplies issue only to ASIMD pipe F0; SMLAL/SMLAL2 .8h (8 int16 "
                           "lanes) has throughput 1/cycle, so 8 int8 MACs/cycle; int32 accumulation gets 4/cycle "
                           "with SMLAL .4s, at best 5.3/cycle with SMULL .8h + SADDW/SADDW2 (3 F-pipe "
                           "instructions per 8 products)"),
        "targets": TARGETS,
        "method": ("hot inner loop of the cross-compiled kernel (innermost loop with the most vector "
                   "multiply lanes), MACs counted from its multiply instructions, llvm-mca-19 steady-state "
                   "cycles per iteration; int16_vs_int32_cycles = int16 cycles/MAC / int32 cycles/MAC; "
                   "neon_peak_fraction = int16 MACs/cycle / peak"),
        "kernels": results,
        "wall_seconds": round(time.time() - t0, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.out} in {out['wall_seconds']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
