"""Static performance of the integer kernels on the Raspberry Pi 4 (Cortex-A72), whole kernels, without a Pi.

For every conv2d/dense layer of both reference models (``fmnist_vgg``, ``fmnist_resnet``, batch 1) and of a
224x224 MobileNetV2 and ResNet-18 (shapes generated here: torchvision's layer lists), this script
cross-compiles, for ``{"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mcpu": "cortex-a72"}``:

- ``int16``: our int16-accumulator kernel (``conv2d_int``/``dense_int``: ``smlal``/``smlal2 .8h``);
- ``paired_int32``: the best int32-accumulating int8 kernel we can express for the layer, the gemmlowp/ruy
  form (``paired_int32``: ``smull .8h`` + ``smlal2 .8h`` + ``sadalp .4s`` via ``T.call_llvm_pure_intrin``,
  tensorized, with its own ``R x C`` register blocking).  Depthwise layers are no GEMM: there the int32
  baseline is our own schedule's int32 variant (``smlal .4s``), said so per row (``baseline``);

and estimates each kernel's WHOLE cost (``tools/kernel_cost.py``): every basic block of the kernel body is
counted by running an instrumented copy once under qemu-user with the layer's shapes, and costs llvm-mca-19's
steady-state cycles per iteration on the Cortex-A72 model; ``cycles = sum(count x cycles per block)``, so the
input packing, the loops' set-up, the horizontal reductions (paired: 4 lanes per output) and the unpacking are
counted.  From these:

- ``kernel_peak_fraction`` = layer MACs / (cycles x 8): 8 MACs/cycle is the A72's int8 peak (one 8-lane
  ``smull``/``smlal`` per cycle on its only integer-multiply pipe, F0; see ../shared/ARM.md);
- ``int16_vs_best_int32_cycles`` = int16 kernel cycles / paired_int32 kernel cycles (whole kernels);
- the inner loop of each kernel (asm, MACs per iteration, llvm-mca cycles) beside it.

Left out: caches (llvm-mca assumes L1 hits; the big ResNet-18 layers stream weights from L2), branch
mispredictions, the FFI wrapper, workspace allocation, and requantize epilogues (both kernels without).

``int32_path`` (``--int32-path``, which updates only that key of the json): the int32 path of the real build,
before and after the paired kernel became the aarch64 int32 kernel: both reference models with their uniform
8-bit plans (``bench/results/plans/*_uniform8.json``: every layer int32), each weighted layer as the build fuses
it (``schedules/fuse.py``: the kernel plan the legalization chooses from the layer's constant weights, and its
requantize epilogue), whole-kernel cycles as above of ``widening`` (``conv2d_int``/``dense_int`` int32:
``smlal .4s``, the build's kernel before) and ``paired`` (where the weights prove the int16 pair sums), and which
one the build now runs (``build``).

``bitserial`` (``--bitserial``, which updates only that key): the multiply-free bit-serial kernel
(``schedules/bitserial.py``: ternary weights as -1/nonzero bit masks, 4-bit data as bit planes, ``eor``/``and``/
``cnt``/``add .16b``) on the ternary-weight layers of the reference models' mellempudi2017 ternary plans, with
4-bit activations (``--act-bits 4``; the committed plans keep the default 8), against the paired int32 kernel of
the same layer: ``lowbit_vs_best_int32_cycles`` = bit-serial / paired whole-kernel cycles (goal <= 0.8); ``build``:
the estimated ratio the legalization decides on (``legalize.bitserial_decision``) and its choice, and per model
``build_vs_best_int32_cycles``, the ternary layers' cycles with the kernels the build picks.

Usage::

    .venv/bin/python bench/arm_static.py [--models fmnist_vgg,fmnist_resnet,mobilenet_v2_224,resnet18_224]
    .venv/bin/python bench/arm_static.py --int32-path
    .venv/bin/python bench/arm_static.py --bitserial

Needs ``llvm-mca-19`` and the qemu setup (``bash .ci/setup_arm.sh``).
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import tvm

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))   # tools/: assembly, emulation and kernel-cost tooling of benches and tests (not installed)

from tools import arm_emulation, kernel_cost  # noqa: E402
from tools.asm import hot_loop, llvm_mca, mca_tool, mul_lanes  # noqa: E402
from tvm_fxp.schedules import conv2d_primfuncs, dense_primfuncs, plan_conv2d, plan_dense, preset  # noqa: E402
from tvm_fxp.schedules import bitserial as bs  # noqa: E402
from tvm_fxp.schedules import paired_int32 as paired  # noqa: E402
from tvm_fxp.schedules.legalize import BITSERIAL_MAX_RATIO  # noqa: E402
from tvm_fxp.schedules.targets import RPI4  # noqa: E402

RUNNER = REPO / "tests" / "schedules" / "arm_runner.py"
PEAK = 8.0
GOAL_PEAK_FRACTION = 0.7


# ----------------------------------------------------------------------------------------- layer shapes

def conv(model, name, c, oc, hw, k, s=1, groups=1, dtype="uint8"):
    p = k // 2
    return {"model": model, "layer": name, "kind": "conv2d", "data_shape": [1, c, hw, hw],
            "weight_shape": [oc, c // groups, k, k], "strides": [s, s], "padding": [p, p, p, p], "groups": groups,
            "dtype": dtype}


def mobilenet_v2_224() -> list:
    """torchvision mobilenet_v2: stem 3x3 s2, inverted residuals (t, c, n, s), 1x1 to 1280, fc 1000."""
    m, out, hw, c = "mobilenet_v2_224", [], 224, 32
    out.append(conv(m, "stem", 3, 32, hw, 3, 2, dtype="int8"))
    hw = 112
    i = 0
    for t, co, n, s in [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                        (6, 160, 3, 2), (6, 320, 1, 1)]:
        for j in range(n):
            stride = s if j == 0 else 1
            hidden = c * t
            if t != 1:
                out.append(conv(m, f"b{i}_expand", c, hidden, hw, 1))
            out.append(conv(m, f"b{i}_dw", hidden, hidden, hw, 3, stride, groups=hidden))
            hw = hw // stride
            out.append(conv(m, f"b{i}_project", hidden, co, hw, 1))
            c, i = co, i + 1
    out.append(conv(m, "head", c, 1280, hw, 1))
    out.append({"model": m, "layer": "fc", "kind": "dense", "data_shape": [1, 1280], "weight_shape": [1280, 1000],
                "dtype": "uint8"})
    return out


def resnet18_224() -> list:
    m, out = "resnet18_224", []
    out.append(conv(m, "conv1", 3, 64, 224, 7, 2, dtype="int8"))
    hw, c = 56, 64
    for stage, co in enumerate((64, 128, 256, 512)):
        for blk in range(2):
            s = 2 if stage > 0 and blk == 0 else 1
            out.append(conv(m, f"l{stage + 1}.{blk}.conv1", c, co, hw, 3, s))
            if s == 2 or c != co:
                out.append(conv(m, f"l{stage + 1}.{blk}.down", c, co, hw, 1, s))
            hw //= s
            out.append(conv(m, f"l{stage + 1}.{blk}.conv2", co, co, hw, 3))
            c = co
    out.append({"model": m, "layer": "fc", "kind": "dense", "data_shape": [1, 512], "weight_shape": [512, 1000],
                "dtype": "uint8"})
    return out


def reference_model(name: str) -> list:
    """conv2d/matmul calls of a bundled model after Prepare, as layer specs (first layer int8, others uint8)."""
    import tvm_fxp
    from tvm_fxp.passes import Prepare
    from tvm_fxp.passes.relax_utils import main_bindings, op_name

    mod = Prepare()(tvm_fxp.import_onnx(str(REPO / "examples" / "models" / f"{name}.onnx")))
    out, counts = [], {}
    for b in main_bindings(mod["main"]):
        op = op_name(b.value)
        if op not in ("relax.nn.conv2d", "relax.matmul"):
            continue
        kind = "conv2d" if op == "relax.nn.conv2d" else "dense"
        idx = counts.get(kind, 0)
        counts[kind] = idx + 1
        ds = [0] + [int(s) for s in list(b.value.args[0].ty.shape)[1:]]
        ws = [int(s) for s in b.value.args[1].ty.shape]
        spec = {"model": name, "layer": f"{'conv2d' if kind == 'conv2d' else 'matmul'}_{idx}", "kind": kind,
                "data_shape": [1, *ds[1:]], "weight_shape": ws, "dtype": "int8" if not out else "uint8"}
        if kind == "conv2d":
            a = b.value.attrs
            spec.update(strides=[int(s) for s in a.strides], padding=[int(p) for p in a.padding],
                        groups=int(a.groups))
            if [int(d) for d in a.dilation] != [1, 1]:
                spec["dilation"] = [int(d) for d in a.dilation]
        out.append(spec)
    return out


MODELS = {"fmnist_vgg": lambda: reference_model("fmnist_vgg"), "fmnist_resnet": lambda: reference_model("fmnist_resnet"),
          "mobilenet_v2_224": mobilenet_v2_224, "resnet18_224": resnet18_224}


def shape_key(spec) -> str:
    if spec["kind"] == "dense":
        return f"dense_{spec['weight_shape'][0]}to{spec['weight_shape'][1]}_{spec['dtype']}"
    _, c, h, w = spec["data_shape"]
    oc, _, kh, kw = spec["weight_shape"]
    g = spec.get("groups", 1)
    kind = "dw" if g == c and g > 1 else ("g" if g > 1 else "conv")
    s = spec["strides"][0]
    return f"{kind}{kh}x{kw}{'_s%d' % s if s > 1 else ''}_{c}to{oc}_{h}x{w}_{spec['dtype']}"


# ----------------------------------------------------------------------------------------- kernels

def plans(spec, target):
    """{variant: (plan, primfuncs, out shape, out dtype, weight shape used)}."""
    dt = spec["dtype"]
    out = {}
    if spec["kind"] == "dense":
        a, b = spec["data_shape"], spec["weight_shape"]
        p16 = plan_dense(a, b, dt, "int16", target=target)
        out["int16"] = (p16, dense_primfuncs(p16, rows=1), (1, b[1]), "int16")
        pp = paired.plan_paired_dense(a, b, dt)
        out["paired_int32"] = (pp, paired.paired_primfuncs(pp), (1, b[1]), "int32")
        return out
    kw = dict(strides=spec["strides"], padding=spec["padding"], dilation=spec.get("dilation", [1, 1]))
    g = spec.get("groups", 1)
    p16 = plan_conv2d(spec["data_shape"], spec["weight_shape"], dt, "int16", groups=g, target=target, **kw)
    oshape = (1, spec["weight_shape"][0], *p16.out_hw)
    out["int16"] = (p16, conv2d_primfuncs(p16, batch=1), oshape, "int16")
    if g == 1:
        pp = paired.plan_paired_conv2d(spec["data_shape"], spec["weight_shape"], dt, **kw)
        out["paired_int32"] = (pp, paired.paired_primfuncs(pp), oshape, "int32")
    else:
        p32 = plan_conv2d(spec["data_shape"], spec["weight_shape"], dt, "int32", groups=g, target=target, **kw)
        out["own_int32"] = (p32, conv2d_primfuncs(p32, batch=1), oshape, "int32")
    return out


def macs(spec) -> int:
    if spec["kind"] == "dense":
        return spec["weight_shape"][0] * spec["weight_shape"][1]
    oc, icg, kh, kw = spec["weight_shape"]
    _, _, h, w = spec["data_shape"]
    (sh, sw), (pt, pl, pb, pr) = spec["strides"], spec["padding"]
    d = spec.get("dilation", [1, 1])
    oh = (h + pt + pb - d[0] * (kh - 1) - 1) // sh + 1
    ow = (w + pl + pr - d[1] * (kw - 1) - 1) // sw + 1
    return oh * ow * oc * icg * kh * kw


def build_case(work: Path, name: str, spec, plan, funcs, oshape, odtype, target, rng, consts=()):
    pack_func, offset_func, kernel_func = funcs
    wshape = spec["weight_shape"]
    w = rng.integers(-3, 4, wshape).astype("int8")
    lo, hi = (-8, 8) if spec["dtype"] == "int8" else (0, 8)
    x = rng.integers(lo, hi, spec["data_shape"]).astype(spec["dtype"])
    packed = tvm.runtime.empty(plan.packed_weight_shape, "int8")
    tvm.tirx.build(pack_func, target="llvm")(tvm.runtime.tensor(w), packed)
    inputs = {"data": x, "packed": packed.numpy()}
    if offset_func is not None:
        off_dtype = getattr(plan, "offset_dtype", "int32")
        off = tvm.runtime.empty((wshape[0] if spec["kind"] == "conv2d" else wshape[1],), off_dtype)
        tvm.tirx.build(offset_func, target="llvm")(tvm.runtime.tensor(w), off)
        inputs["offset"] = off.numpy()
    for j, c in enumerate(consts):        # a fused epilogue's per-channel constants
        inputs[f"epilogue_c{j}"] = c
    np.savez(work / f"{name}.npz", **inputs)
    lib = tvm.tirx.build(kernel_func.with_attr("global_symbol", "kernel"), target=target)
    asm = lib.inspect_source("asm")
    blocks = kernel_cost.instrumented_library(lib, work / f"{name}.so")
    case = {"name": name, "lib": f"{name}.so", "inputs": f"{name}.npz", "args": list(inputs), "entry": "kernel",
            "out_shape": list(oshape), "out_dtype": odtype, "counters": len(blocks)}
    return case, blocks, asm


def inner_loop(asm: str, hottest) -> dict:
    """The innermost loop with the most multiply lanes (``asm.hot_loop``); for a kernel LLVM unrolled completely,
    the block with the most cycles in the whole-kernel count."""
    try:
        loop = hot_loop(asm)
        lines, lanes, mnem = loop.lines, loop.mul_lanes, loop.mnemonics
    except ValueError:
        lines = hottest.lines
        lanes = sum(mul_lanes(i) for i in lines)
        mnem = {}
        for i in lines:
            mnem[i.split()[0]] = mnem.get(i.split()[0], 0) + 1
    mca = llvm_mca("\n".join(lines) + "\n")
    return {"macs_per_iteration": lanes, "cycles_per_iteration": round(mca.cycles_per_iteration, 3),
            "macs_per_cycle": round(lanes / mca.cycles_per_iteration, 3),
            "mnemonics": dict(sorted(mnem.items())), "asm": lines}


def plan_json(plan) -> dict:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in plan.__dict__.items()}


def mca_version() -> str:
    out = subprocess.run([mca_tool(), "--version"], capture_output=True, text=True).stdout
    return " ".join(line.strip() for line in out.splitlines() if "version" in line.lower())[:200]


def int32_path_layers(models=("fmnist_vgg", "fmnist_resnet")) -> list:
    """``[(model, layer, spec, {variant: (plan, primfuncs, out shape, out dtype, consts)}, build variant)]`` of the
    int32 layers of the reference models' uniform 8-bit builds for the Pi, as ``FuseEpilogue`` fuses them."""
    from unittest import mock

    from tvm import relax

    from tvm_fxp.api import bind_plan, load_model
    from tvm_fxp.passes.realize import realized_accumulators
    from tvm_fxp.plan import Plan
    from tvm_fxp.schedules import fuse as F
    from tvm_fxp.schedules import legalize as L
    from tvm_fxp.schedules.common import function_bindings, use_counts
    from tvm_fxp.schedules.epilogue import match

    target = preset("rpi4")
    out = []
    for model in models:
        prepared, lg = load_model(str(REPO / "examples" / "models" / f"{model}.onnx"))
        q = bind_plan(prepared, lg, Plan.load(REPO / "bench" / "results" / "plans" / f"{model}_uniform8.json"))
        realized = q.realized()
        layers = iter(realized_accumulators(realized))
        func = realized["main"]
        bindings = function_bindings(func)
        bound, uses, outputs = {b.var: b.value for b in bindings}, use_counts(func), F._outputs(func)
        for k, b in enumerate(bindings):
            v = b.value
            if not isinstance(v, relax.Call) or not hasattr(v.op, "name") or str(v.op.name) not in F._KERNELS:
                continue
            layer = next(layers)
            conv = str(v.op.name) == "relax.nn.conv2d"
            weight = L.constant_value(v.args[1], bound.get)
            with target:
                chosen = F._plan(v, target, bound.get)
                with mock.patch.object(paired, "preferred", lambda plan: False):     # the build before
                    widening = F._plan(v, target, bound.get)
                forced = L.conv2d_plan_for if conv else L.dense_plan_for
                with mock.patch.object(paired, "preferred", lambda plan: True):      # paired wherever proven
                    proven = forced(v, target, weight)
            found = match(bindings, k, b.var, uses, outputs, 1 if conv else len(b.var.ty.shape) - 1)
            epi = found[0] if found is not None else None
            wshape = [int(s) for s in v.args[1].ty.shape]
            dshape = [1] + [int(s) for s in list(v.args[0].ty.shape)[1:]]
            spec = {"model": model, "layer": layer, "kind": "conv2d" if conv else "dense", "data_shape": dshape,
                    "weight_shape": wshape, "dtype": str(v.args[0].ty.dtype)}
            if conv:
                a = v.attrs
                spec.update(strides=[int(x) for x in a.strides], padding=[int(x) for x in a.padding],
                            groups=int(a.groups), dilation=[int(x) for x in a.dilation])
            variants = {}
            for name, plan in (("widening", widening), ("paired", proven)):
                if plan is None or (name == "paired" and plan.layout != "paired"):
                    continue
                funcs = conv2d_primfuncs(plan, 1, epi) if conv else dense_primfuncs(plan, 1, epi)
                oshape = tuple(int(s) for s in [1, *list(b.var.ty.shape)[1:]])    # the epilogue is elementwise
                odtype = epi.out_dtype if epi is not None else "int32"
                variants[name] = (plan, funcs, oshape, odtype, [] if epi is None else list(epi.consts))
            build = "paired" if chosen is not None and chosen.layout == "paired" else "widening"
            out.append((model, layer, spec, variants, build, epi is not None))
    return out


def int32_path(work: Path, emulator, rng) -> dict:
    """The ``int32_path`` section (see the module doc)."""
    target = preset("rpi4")
    layers = int32_path_layers()
    cases, blocks, asms = [], {}, {}
    for model, layer, spec, variants, _, _ in layers:
        for variant, (plan, funcs, oshape, odtype, consts) in variants.items():
            name = f"{model}_{layer}__{variant}"
            case, blocks[name], asms[name] = build_case(work, name, spec, plan, funcs, oshape, odtype, target, rng,
                                                        consts)
            cases.append(case)
        print(f"  built {model}:{layer} {sorted(variants)}", flush=True)
    (work / "manifest.json").write_text(json.dumps({"kernels": cases, "models": []}))
    emulator.run_python(RUNNER, str(work), timeout=3600)
    with np.load(work / "results.npz") as res:
        counts = {c["name"]: res[c["name"] + "__counts"] for c in cases}
    rows, totals = [], {}
    for model, layer, spec, variants, build, fused in layers:
        n_macs = macs(spec)
        row = {"model": model, "layer": layer, "spec": spec, "macs": n_macs, "epilogue_fused": fused,
               "build": build}
        for variant, (plan, *_rest) in variants.items():
            name = f"{model}_{layer}__{variant}"
            whole = kernel_cost.whole_kernel_cycles(blocks[name], counts[name])
            row[variant] = {"plan": plan_json(plan), "whole_kernel_cycles": round(whole["cycles"]),
                            "kernel_peak_fraction": round(n_macs / (whole["cycles"] * PEAK), 4),
                            "inner_loop": inner_loop(asms[name], blocks[name][whole["blocks"][0]["block"]])}
        row["before_cycles"] = row["widening"]["whole_kernel_cycles"]
        row["after_cycles"] = row[build]["whole_kernel_cycles"]
        row["after_vs_before_cycles"] = round(row["after_cycles"] / row["before_cycles"], 4)
        if "paired" in row:
            row["paired_vs_widening_cycles"] = round(row["paired"]["whole_kernel_cycles"] / row["before_cycles"], 4)
        rows.append(row)
        t = totals.setdefault(model, {"before_cycles": 0, "after_cycles": 0, "macs": 0, "paired_layers": 0,
                                      "layers": 0})
        t["before_cycles"] += row["before_cycles"]
        t["after_cycles"] += row["after_cycles"]
        t["macs"] += n_macs
        t["layers"] += 1
        t["paired_layers"] += build == "paired"
        print(f"{model}:{layer:<10} before {row['before_cycles']:>9} after {row['after_cycles']:>9} ({build}) "
              f"{row['after_vs_before_cycles']:.3f}" + (f" paired/widening {row['paired_vs_widening_cycles']:.3f}"
                                                        if "paired" in row else ""), flush=True)
    for t in totals.values():
        t["after_vs_before_cycles"] = round(t["after_cycles"] / t["before_cycles"], 4)
        t["before_peak_fraction"] = round(t["macs"] / (t["before_cycles"] * PEAK), 4)
        t["after_peak_fraction"] = round(t["macs"] / (t["after_cycles"] * PEAK), 4)
    return {"plans": "bench/results/plans/{model}_uniform8.json (every layer int32)",
            "method": ("each int32 layer as the Pi build fuses it (requantize epilogue in the kernel), batch 1; "
                       "before = conv2d_int/dense_int int32 (widening smlal .4s, the build's int32 kernel until "
                       "now), after = the kernel the build now chooses (build): paired gemmlowp/ruy where the "
                       "constant weights prove the int16 pair sums and the layer is not a <4-channel stem; whole-"
                       "kernel cycles as in 'method'"),
            "models": totals, "layers": rows}


def ternary_layers(models=("fmnist_vgg", "fmnist_resnet")) -> list:
    """``(model, layer, spec)`` of the ternary-weight layers (2-bit symmetric weight format with a cluster
    multiplier: stored levels {-1, 0, 1}) of the reference models' mellempudi2017 ternary plans; a ternary dense
    layer runs as a 1x1 conv2d on a 1x1 map (the same GEMM)."""
    out = []
    for model in models:
        plan = json.loads((REPO / "bench" / "results" / "plans" / f"{model}_mellempudi2017_ternary.json").read_text())
        for spec in reference_model(model):
            fmt = plan["tensors"].get(f"{spec['layer']}.weight", {})
            if fmt.get("bits") == 2 and fmt.get("multiplier") is not None and spec.get("groups", 1) == 1:
                out.append((model, spec["layer"], spec, plan["config"].get("act_bits")))
    return out


def bitserial_section(work: Path, emulator, rng, bits: int = 4) -> dict:
    """``lowbit_vs_best_int32_cycles`` per ternary layer: the multiply-free bit-serial kernel (``bits``-bit data)
    against the paired gemmlowp/ruy int32 kernel of the same layer, whole kernels (both instrumented, one qemu run;
    the bit-serial results are also checked bit for bit against the int64 numpy conv)."""
    from tests.schedules.reference import conv2d_ref

    target = preset("rpi4")
    layers = ternary_layers()
    shapes: dict = {}
    for model, layer, spec, act_bits in layers:
        shapes.setdefault(shape_key(spec), {"spec": spec, "layers": [], "plan_act_bits": act_bits})[
            "layers"].append(f"{model}:{layer}")
    cases, blocks, asms, plans_, expected = [], {}, {}, {}, {}
    for key, entry in shapes.items():
        spec = entry["spec"]
        if spec["kind"] == "dense":
            k, n = spec["weight_shape"]
            conv_spec = {**spec, "kind": "conv2d", "data_shape": [1, k, 1, 1], "weight_shape": [n, k, 1, 1],
                         "strides": [1, 1], "padding": [0, 0, 0, 0]}
            pp = paired.plan_paired_dense(spec["data_shape"], spec["weight_shape"], "uint8")
            poshape = (1, n)
        else:
            conv_spec = spec
            pp = paired.plan_paired_conv2d(spec["data_shape"], spec["weight_shape"], "uint8",
                                           strides=spec["strides"], padding=spec["padding"])
            poshape = (1, spec["weight_shape"][0], *pp.out_hw)
        bp = bs.plan_bitserial_conv2d(conv_spec["data_shape"], conv_spec["weight_shape"], bits,
                                      conv_spec["strides"], conv_spec["padding"])
        name = f"{key}__paired_int32"
        case, blocks[name], asms[name] = build_case(work, name, {**spec, "dtype": "uint8"}, pp,
                                                    paired.paired_primfuncs(pp), poshape, "int32", target, rng)
        cases.append(case)
        x = rng.integers(0, 1 << bits, conv_spec["data_shape"]).astype("uint8")
        w = rng.integers(-1, 2, conv_spec["weight_shape"]).astype("int8")
        name = f"{key}__bitserial"
        np.savez(work / f"{name}.npz", data=x, masks=bs.pack_weight_masks(w, bp), offset=bs.weight_offset(w, bp))
        lib = tvm.tirx.build(bs.bitserial_primfunc(bp).with_attr("global_symbol", "kernel"), target=target)
        asms[name] = lib.inspect_source("asm")
        blocks[name] = kernel_cost.instrumented_library(lib, work / f"{name}.so")
        expected[name] = conv2d_ref(x, w, conv_spec["strides"], conv_spec["padding"])
        cases.append({"name": name, "lib": f"{name}.so", "inputs": f"{name}.npz", "args": ["data", "masks", "offset"],
                      "entry": "kernel", "out_shape": list(expected[name].shape), "out_dtype": "int32",
                      "counters": len(blocks[name])})
        plans_[key] = (pp, bp)
        print(f"  built {key}", flush=True)
    (work / "manifest.json").write_text(json.dumps({"kernels": cases, "models": []}))
    emulator.run_python(RUNNER, str(work), timeout=3600)
    with np.load(work / "results.npz") as res:
        counts = {c["name"]: res[c["name"] + "__counts"] for c in cases}
        exact = {n: bool(np.array_equal(res[n].astype(np.int64), e)) for n, e in expected.items()}
    rows = {}
    for key, entry in shapes.items():
        spec, n_macs = entry["spec"], macs(entry["spec"])
        pp, bp = plans_[key]
        row = {"layers": entry["layers"], "spec": spec, "macs": n_macs, "activation_bits": bits,
               "plan_activation_bits": entry["plan_act_bits"], "padded_depth": bp.padded_reduce,
               "depth": bp.reduce, "depth_efficiency": round(bp.reduce / bp.padded_reduce, 4),
               "lanes": "positions" if isinstance(bp, bs.PositionLanesPlan) else "depth"}
        for variant, plan in (("paired_int32", pp), ("bitserial", bp)):
            name = f"{key}__{variant}"
            whole = kernel_cost.whole_kernel_cycles(blocks[name], counts[name])
            row[variant] = {"plan": plan_json(plan), "whole_kernel_cycles": round(whole["cycles"]),
                            "macs_per_cycle": round(n_macs / whole["cycles"], 3),
                            "instructions_executed": whole["instructions"], "top_blocks": whole["blocks"][:5],
                            "inner_loop": inner_loop(asms[name] if variant == "paired_int32" else "",
                                                     blocks[name][whole["blocks"][0]["block"]])}
        row["bitserial"]["bit_exact_under_qemu"] = exact[f"{key}__bitserial"]
        il = row["bitserial"]["inner_loop"]
        # padded work: each cnt (``(X_b ^ M) & N`` of one bit plane) covers 128 depth values of one output (depth
        # lanes) or 8 depth values of 16 positions (positions lanes), B planes per product
        il["macs_per_iteration"] = il["mnemonics"].get("cnt", 0) * 128 // bits
        il["macs_per_cycle"] = round(il["macs_per_iteration"] / il["cycles_per_iteration"], 3)
        row["lowbit_vs_best_int32_cycles"] = round(row["bitserial"]["whole_kernel_cycles"]
                                                   / row["paired_int32"]["whole_kernel_cycles"], 4)
        row["meets_goal"] = row["lowbit_vs_best_int32_cycles"] <= 0.8
        # what the build decides for this layer (legalize.bitserial_decision: the fitted whole-kernel models)
        est = bs.estimated_cycles(bp) / paired.estimated_cycles(pp)
        row["build"] = {"estimated_ratio": round(est, 3), "chooses_bitserial": est < BITSERIAL_MAX_RATIO,
                        "estimated_bitserial_cycles": round(bs.estimated_cycles(bp))}
        hot = row["bitserial"]["top_blocks"][0]
        row["bitserial"]["hot_loop_share"] = round(hot["cycles"] / row["bitserial"]["whole_kernel_cycles"], 4)
        rows[key] = row
        print(f"{key:<36} bitserial {row['bitserial']['whole_kernel_cycles']:>9} ({row['bitserial']['macs_per_cycle']}"
              f" MACs/c, exact {exact[f'{key}__bitserial']}) paired {row['paired_int32']['whole_kernel_cycles']:>9} "
              f"({row['paired_int32']['macs_per_cycle']}) ratio {row['lowbit_vs_best_int32_cycles']:.3f}", flush=True)
    models = {}
    for model in sorted({m for m, *_ in layers}):
        sel = [(model, lay, s) for m, lay, s, _ in layers if m == model]
        cb = sum(rows[shape_key(s)]["bitserial"]["whole_kernel_cycles"] for *_, s in sel)
        cp = sum(rows[shape_key(s)]["paired_int32"]["whole_kernel_cycles"] for *_, s in sel)
        built = sum(rows[shape_key(s)]["bitserial" if rows[shape_key(s)]["build"]["chooses_bitserial"]
                                       else "paired_int32"]["whole_kernel_cycles"] for *_, s in sel)
        models[model] = {"ternary_layers": len(sel), "bitserial_cycles": cb, "paired_int32_cycles": cp,
                         "lowbit_vs_best_int32_cycles": round(cb / cp, 4),
                         "bitserial_layers_built": sum(rows[shape_key(s)]["build"]["chooses_bitserial"] for *_, s in sel),
                         "build_vs_best_int32_cycles": round(built / cp, 4)}
    return {"activation_bits": bits, "goal": 0.8,
            "layers_from": "bench/results/plans/{model}_mellempudi2017_ternary.json: layers whose weights are "
                           "ternary levels (2-bit symmetric format with a cluster multiplier)",
            "method": ("both kernels built for the Pi, batch 1, no epilogue; whole-kernel cycles as in 'method' "
                       f"(one instrumented qemu run); bit-serial data: random {bits}-bit uint8, weights random "
                       "ternary; baseline: paired gemmlowp/ruy int32 (dense layers: its dense form; bit-serial: a "
                       "1x1 conv on a 1x1 map)"),
            "models": models, "kernels": rows}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "arm_static.json")
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--int32-path", action="store_true", help="only (re)compute the int32_path key of --out")
    ap.add_argument("--bitserial", action="store_true", help="only (re)compute the bitserial key of --out")
    args = ap.parse_args(argv)
    emulator, why = arm_emulation.find()
    if mca_tool() is None or emulator is None:
        print(f"needs llvm-mca-19 and the qemu setup: {why or 'llvm-mca-19 missing'}; run bash .ci/setup_arm.sh",
              file=sys.stderr)
        return 2
    t0 = time.time()
    for key, section in (("bitserial", bitserial_section), ("int32_path", int32_path)):
        if not getattr(args, key):
            continue
        out = json.loads(args.out.read_text()) if args.out.exists() else {}
        with tempfile.TemporaryDirectory() as tmp:
            out[key] = section(Path(tmp), emulator, np.random.default_rng(0))
        out[key]["date"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        out[key]["wall_seconds"] = round(time.time() - t0, 1)
        args.out.write_text(json.dumps(out, indent=1) + "\n")
        print(json.dumps(out[key]["models"]), f"\nwrote {args.out}")
        return 0
    target = preset("rpi4")
    rng = np.random.default_rng(0)
    layers = [spec for m in args.models.split(",") for spec in MODELS[m]()]
    shapes: dict = {}
    for spec in layers:
        shapes.setdefault(shape_key(spec), {"spec": spec, "layers": []})["layers"].append(
            f"{spec['model']}:{spec['layer']}")
    print(f"{len(layers)} layers, {len(shapes)} distinct shapes; {mca_version()}", flush=True)
    kernels, blocks, asms, cases = {}, {}, {}, []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for key, entry in shapes.items():
            for variant, (plan, funcs, oshape, odtype) in plans(entry["spec"], target).items():
                name = f"{key}__{variant}"
                case, blocks[name], asms[name] = build_case(work, name, entry["spec"], plan, funcs, oshape, odtype,
                                                            target, rng)
                cases.append(case)
                kernels.setdefault(key, {})[variant] = plan
            print(f"  built {key}", flush=True)
        (work / "manifest.json").write_text(json.dumps({"kernels": cases, "models": []}))
        t1 = time.time()
        emulator.run_python(RUNNER, str(work), timeout=3600)
        print(f"qemu run: {time.time() - t1:.0f} s", flush=True)
        with np.load(work / "results.npz") as res:
            counts = {c["name"]: res[c["name"] + "__counts"] for c in cases}

    results = {}
    for key, entry in shapes.items():
        spec, n_macs = entry["spec"], macs(entry["spec"])
        row = {"layers": entry["layers"], "spec": spec, "macs": n_macs}
        for variant, plan in kernels[key].items():
            name = f"{key}__{variant}"
            whole = kernel_cost.whole_kernel_cycles(blocks[name], counts[name])
            row[variant] = {"plan": plan_json(plan), "whole_kernel_cycles": round(whole["cycles"]),
                            "kernel_peak_fraction": round(n_macs / (whole["cycles"] * PEAK), 4),
                            "instructions_executed": whole["instructions"], "top_blocks": whole["blocks"][:5],
                            "inner_loop": inner_loop(asms[name], blocks[name][whole["blocks"][0]["block"]])}
        base = "paired_int32" if "paired_int32" in row else "own_int32"
        row["baseline"] = base
        row["int16_vs_best_int32_cycles"] = round(row["int16"]["whole_kernel_cycles"] / row[base]["whole_kernel_cycles"], 4)
        row["int16_vs_best_int32_inner_loop_cycles_per_mac"] = round(
            row[base]["inner_loop"]["macs_per_cycle"] / row["int16"]["inner_loop"]["macs_per_cycle"], 4)
        row["kernel_peak_fraction"] = row["int16"]["kernel_peak_fraction"]
        row["class"] = "dense" if spec["kind"] == "dense" else (
            "depthwise" if spec.get("groups", 1) > 1 else f"conv{spec['weight_shape'][2]}x{spec['weight_shape'][3]}")
        row["meets_peak_goal"] = row["kernel_peak_fraction"] >= GOAL_PEAK_FRACTION
        results[key] = row
        print(f"{key:<40} int16 {row['int16']['whole_kernel_cycles']:>10} cyc peak {row['kernel_peak_fraction']:.3f}"
              f" | {base} {row[base]['whole_kernel_cycles']:>10} cyc peak {row[base]['kernel_peak_fraction']:.3f}"
              f" | 16/32 {row['int16_vs_best_int32_cycles']:.3f}", flush=True)

    summary = {}
    for model in args.models.split(","):
        rows = [r for r in results.values() if any(x.startswith(model + ":") for x in r["layers"])]
        per_class = {}
        for cls in sorted({r["class"] for r in rows}):
            sel = [r for r in rows if r["class"] == cls]
            per_class[cls] = {
                "shapes": len(sel),
                "kernel_peak_fraction_median": round(statistics.median(r["kernel_peak_fraction"] for r in sel), 3),
                "kernel_peak_fraction_min": round(min(r["kernel_peak_fraction"] for r in sel), 3),
                "int16_vs_best_int32_cycles_median": round(statistics.median(r["int16_vs_best_int32_cycles"] for r in sel), 3),
                "meets_peak_goal": sum(r["meets_peak_goal"] for r in sel)}
        # whole model: every layer (repeats counted), cycles summed
        c16 = sum(results[shape_key(s)]["int16"]["whole_kernel_cycles"] for s in layers if s["model"] == model)
        c32 = sum(results[shape_key(s)][results[shape_key(s)]["baseline"]]["whole_kernel_cycles"]
                  for s in layers if s["model"] == model)
        m = sum(macs(s) for s in layers if s["model"] == model)
        summary[model] = {"classes": per_class, "model_int16_cycles": c16, "model_best_int32_cycles": c32,
                          "model_int16_vs_best_int32_cycles": round(c16 / c32, 4),
                          "model_int16_peak_fraction": round(m / (c16 * PEAK), 4), "macs": m}
        print(model, json.dumps(summary[model]), flush=True)

    out = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "tvm_version": tvm.__version__, "llvm_mca": mca_version(), "target": RPI4, "mca_cpu": "cortex-a72",
        "peak_macs_per_cycle": PEAK, "goal_kernel_peak_fraction": GOAL_PEAK_FRACTION,
        "method": ("whole kernel: every basic block of the kernel body counted by one instrumented run under "
                   "qemu-user (tools/kernel_cost.py), each costed at llvm-mca-19's steady-state cycles per "
                   "iteration (Cortex-A72 model); cycles = sum(count x cycles); kernel_peak_fraction = MACs / "
                   "(cycles x 8); int16_vs_best_int32_cycles = int16 cycles / paired_int32 cycles (depthwise: / "
                   "our own int32 variant, no paired GEMM form); leaves out caches, mispredictions, the FFI "
                   "wrapper, workspace allocation and requantize epilogues"),
        "summary": summary, "kernels": results, "wall_seconds": round(time.time() - t0, 1)}
    for kept in ("int32_path", "bitserial"):        # kept (--int32-path, --bitserial)
        if args.out.exists() and kept in json.loads(args.out.read_text()):
            out[kept] = json.loads(args.out.read_text())[kept]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {args.out} in {out['wall_seconds']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
