"""Depthwise conv2d kernels on MobileNetV2-224 (1 thread, batch 1): the ``groups`` kernel (16 channels per
vector, NCHW transposed in and out) against the x86 depthwise kernels (``schedules/conv2d_depthwise.py``).

    .venv/bin/python bench/depthwise.py [--rounds 7] [--out bench/results/depthwise.json]

Builds the uniform 8-bit MobileNetV2-224 of ``bench/models224.py`` three times in this process -- ``groups``
(the depthwise kernels disabled, as before them), ``depthwise`` (the widening multiply-add kernel) and
``depthwise_vnni`` (vpermb + vpdpbusd, on hosts with AVX-512 VNNI and VBMI) -- checks each bit-exact against
the simulated graph, then times, interleaved round by round: every depthwise layer's kernel call
(``tvm_fxp.runtime.profile``, fastest of 5 within a round) and the whole model's call (the VM's ``main``);
medians over the rounds.  The machine may be shared: read the ratios, not the absolute times.
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
from tvm_fxp.runtime import cpu_ghz, layer_times, profile  # noqa: E402
from tvm_fxp.schedules import conv2d_depthwise, host, kernel_config  # noqa: E402

MODEL = "mobilenetv2_224"


def build(realized, variant: str):
    """``realized`` built with the depthwise layers on ``variant``'s kernel."""
    if variant == "groups":
        with mock.patch.object(conv2d_depthwise, "supports", lambda *a: False):
            return tvm_fxp.build(realized)
    if variant == "depthwise":
        with mock.patch.object(conv2d_depthwise, "vnni_fits", lambda *a: False):
            return tvm_fxp.build(realized)
    return tvm_fxp.build(realized)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "depthwise.json"))
    args = p.parse_args(argv)
    variants = ["groups", "depthwise"] + (["depthwise_vnni"] if kernel_config(host(), "int32").vbmi else [])
    with tempfile.TemporaryDirectory() as d:
        prepared, lg = tvm_fxp.load_model(write_model(MODEL, Path(d)))
    x = images(2)
    stats = calibrate(prepared, lg, x, batch_size=2, progress=False)
    q = tvm_fxp.bind_plan(prepared, lg, uniform.allocate(lg, stats, tvm_fxp.Uniform(8)))
    realized = q.realized()
    sim = tvm_fxp.Runner(tvm_fxp.build(q.simulated())).run(x)
    exes, exact = {}, {}
    for v in variants:
        t = time.time()
        exes[v] = build(realized, v)
        got = tvm_fxp.Runner(exes[v]).run(x)
        exact[v] = bool(np.array_equal(got, sim))
        print(f"{v}: built in {time.time() - t:.0f} s, bit-exact with the simulation: {exact[v]}")
    depthwise = {name for name, layer in lg.layers.items()
                 if layer.op == "conv2d" and layer.weight.shape[1] == 1 and layer.weight.shape[0] > 1}
    x1 = x[:1]
    vms = {v: relax.VirtualMachine(ex, tvm.cpu()) for v, ex in exes.items()}
    per_layer = {v: {} for v in variants}
    whole = {v: [] for v in variants}
    for r in range(args.rounds):
        order = variants[r % len(variants):] + variants[:r % len(variants)]
        for v in order:
            rows = layer_times(q, profile(exes[v], x1, repeats=5), 1)
            for row in rows:
                if row["layer"] in depthwise:
                    per_layer[v].setdefault(row["layer"], []).append(row["ms"])
            inp = tvm.runtime.tensor(x1)
            vms[v]["main"](inp)
            t0, n = time.perf_counter(), 20
            for _ in range(n):
                vms[v]["main"](inp)
            whole[v].append((time.perf_counter() - t0) / n * 1e3)
    layers = sorted(per_layer[variants[0]], key=lambda name: int(name.split("_")[-1]) if name.split("_")[-1].isdigit()
                    else 0)
    base = variants[0]
    result = {"model": MODEL, "threads": 1, "batch": 1, "rounds": args.rounds, "cpu_ghz": cpu_ghz(),
              "bit_exact": exact, "whole_model_ms": {v: float(np.median(whole[v])) for v in variants},
              "depthwise_sum_ms": {v: float(sum(np.median(per_layer[v][name]) for name in layers)) for v in variants},
              "layers": []}
    for name in layers:
        macs = lg.layers[name].macs
        row = {"layer": name, "macs": int(macs)}
        for v in variants:
            ms = float(np.median(per_layer[v][name]))
            row[f"{v}_ms"] = ms
            row[f"{v}_macs_per_cycle"] = macs / (ms * 1e-3 * cpu_ghz() * 1e9) if cpu_ghz() else None
            row[f"{v}_vs_{base}"] = ms / float(np.median(per_layer[base][name]))
        result["layers"].append(row)
    result["ratios"] = {f"{v}_vs_{base}": {
        "depthwise_sum": result["depthwise_sum_ms"][v] / result["depthwise_sum_ms"][base],
        "whole_model": result["whole_model_ms"][v] / result["whole_model_ms"][base]} for v in variants[1:]}
    for row in result["layers"]:
        print(f"{row['layer']:>10}: " + "  ".join(f"{v} {row[v + '_ms']:.3f} ms ({row[v + '_macs_per_cycle']:.1f} MAC/c)"
                                                   for v in variants))
    print(json.dumps({k: result[k] for k in ("depthwise_sum_ms", "whole_model_ms", "ratios", "bit_exact")}, indent=1))
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    main()
