"""k-tiled layers on the Raspberry Pi 4 (Cortex-A72), statically: int16 tiles vs one int32 kernel.

``FuseKTiles`` (``schedules/ktiles.py``) rewrites a k-tiled int16 layer into one int32 kernel where that is
faster; on NEON it keeps the tiles.  This script checks that choice with the whole-kernel cycle estimates of
``bench/arm_static.py`` (``tools/kernel_cost.py``: every basic block counted by one instrumented run under
qemu-user, costed at llvm-mca-19's Cortex-A72 cycles), for every k-tiled layer of the de Bruin plans
(``bench/results/plans/{model}_debruin2020.json``, realized narrow, tiles as ``ktiles.match`` finds them):

- ``int16_tiles``: the sum over the tiles of our int16 kernel on the tile's channels (``smlal .8h``); the
  slices, the int16 partials' widening and the adds between the tiles are NOT counted (they favour the tiles);
- ``own_int32``: our int32 kernel over all channels (what the rpi4 build runs for an int32 layer: widening
  ``smlal .4s``);
- ``paired_int32``: the gemmlowp/ruy kernel over all channels (``smull``/``smlal2 .8h`` + ``sadalp .4s``; in
  bench/arm_static.py, not in the build pipeline).

Writes ``bench/results/arm_ktiles.json``; needs ``llvm-mca-19`` and the qemu setup (``bash .ci/setup_arm.sh``).
"""

from __future__ import annotations

import datetime
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

import arm_static as A  # noqa: E402
from tools import arm_emulation, kernel_cost  # noqa: E402
from tools.asm import mca_tool  # noqa: E402


def tiled_layers(model: str) -> list:
    """``[(layer spec over all channels, [tile channel counts])]`` of the k-tiled layers of ``model``'s plan."""
    import tvm_fxp
    from tvm_fxp.plan import Plan
    from tvm_fxp.schedules import ktiles

    prepared, lg = tvm_fxp.load_model(REPO / "examples" / "models" / f"{model}.onnx")
    q = tvm_fxp.bind_plan(prepared, lg, Plan.load(REPO / "bench" / "results" / "plans" / f"{model}_debruin2020.json"))
    out = []
    for x, op, weights, _ in ktiles.match(q.realized("narrow")["main"]).values():
        ds = [1] + [int(s) for s in list(x.ty.shape)[1:]]
        w = np.concatenate(weights, axis=1 if str(op.op.name) == "relax.nn.conv2d" else 0)
        dtype = str(x.ty.dtype)
        if str(op.op.name) == "relax.nn.conv2d":
            a = op.attrs
            spec = {"model": model, "kind": "conv2d", "data_shape": ds, "weight_shape": list(w.shape),
                    "dtype": dtype, "strides": [int(s) for s in a.strides], "padding": [int(p) for p in a.padding],
                    "groups": 1}
            tiles = [int(t.shape[1]) for t in weights]
        else:
            spec = {"model": model, "kind": "dense", "data_shape": ds, "weight_shape": list(w.shape), "dtype": dtype}
            tiles = [int(t.shape[0]) for t in weights]
        out.append((spec, tiles))
    return out


def with_channels(spec, c: int) -> dict:
    s = json.loads(json.dumps(spec))
    if s["kind"] == "conv2d":
        s["data_shape"][1] = c
        s["weight_shape"][1] = c
    else:
        s["data_shape"][-1] = c
        s["weight_shape"][0] = c
    return s


def main() -> int:
    emulator, why = arm_emulation.find()
    if mca_tool() is None or emulator is None:
        print(f"needs llvm-mca-19 and the qemu setup: {why or 'llvm-mca-19 missing'}", file=sys.stderr)
        return 2
    from tvm_fxp.schedules import conv2d_primfuncs, dense_primfuncs, plan_conv2d, plan_dense, preset

    t0 = time.time()
    target = preset("rpi4")
    rng = np.random.default_rng(0)
    layers = [(m, spec, tiles) for m in ("fmnist_vgg", "fmnist_resnet") for spec, tiles in tiled_layers(m)]
    cases, blocks, jobs = [], {}, []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for li, (model, spec, tiles) in enumerate(layers):
            variants = {}
            for c in sorted(set(tiles)):                       # the int16 kernel of each tile size
                ts = with_channels(spec, c)
                variants[f"int16_c{c}"] = A.plans(ts, target)["int16"], ts
            full = A.plans(spec, target)
            variants["paired_int32"] = full["paired_int32"], spec
            if spec["kind"] == "conv2d":
                kw = dict(strides=spec["strides"], padding=spec["padding"])
                p32 = plan_conv2d(spec["data_shape"], spec["weight_shape"], spec["dtype"], "int32", target=target, **kw)
                variants["own_int32"] = (p32, conv2d_primfuncs(p32, batch=1), full["int16"][2], "int32"), spec
            else:
                p32 = plan_dense(spec["data_shape"], spec["weight_shape"], spec["dtype"], "int32", target=target)
                variants["own_int32"] = (p32, dense_primfuncs(p32, rows=1), full["int16"][2], "int32"), spec
            for v, ((plan, funcs, oshape, odtype), s) in variants.items():
                name = f"l{li}__{v}"
                case, blocks[name], _ = A.build_case(work, name, s, plan, funcs, oshape, odtype, target, rng)
                cases.append(case)
                jobs.append((li, v, name))
            print(f"  built {model} layer {li} ({A.shape_key(spec)}, tiles {tiles})", flush=True)
        (work / "manifest.json").write_text(json.dumps({"kernels": cases, "models": []}))
        emulator.run_python(A.RUNNER, str(work), timeout=3600)
        with np.load(work / "results.npz") as res:
            counts = {c["name"]: res[c["name"] + "__counts"] for c in cases}
    cycles = {(li, v): kernel_cost.whole_kernel_cycles(blocks[n], counts[n])["cycles"] for li, v, n in jobs}
    rows = []
    for li, (model, spec, tiles) in enumerate(layers):
        tiles16 = sum(cycles[(li, f"int16_c{c}")] for c in tiles)
        row = {"model": model, "shape": A.shape_key(spec), "tiles": tiles, "macs": A.macs(spec),
               "int16_tiles_cycles": round(tiles16), "own_int32_cycles": round(cycles[(li, "own_int32")]),
               "paired_int32_cycles": round(cycles[(li, "paired_int32")])}
        row["tiles_vs_own_int32"] = round(tiles16 / cycles[(li, "own_int32")], 3)
        row["tiles_vs_paired_int32"] = round(tiles16 / cycles[(li, "paired_int32")], 3)
        rows.append(row)
        print(json.dumps(row), flush=True)
    out = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
           "llvm_mca": A.mca_version(), "target": A.RPI4, "mca_cpu": "cortex-a72",
           "method": "whole kernels as bench/arm_static.py; tiles: sum of the int16 kernels over each tile's "
                     "channels, without the slices, widening and adds between them (which favours the tiles)",
           "layers": rows, "wall_seconds": round(time.time() - t0, 1)}
    path = REPO / "bench" / "results" / "arm_ktiles.json"
    path.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
