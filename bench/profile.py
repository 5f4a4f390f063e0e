"""Where the time goes at 224x224: per-kernel time of one inference (1 thread, batch 1) of ResNet-50,
SqueezeNet and MobileNetV2 (``bench/models224.py``), uniform 8-bit, realized and built with ``tvm_fxp.build``.

    .venv/bin/python bench/profile.py [--models resnet50_224 ...] [--out bench/results/profile224.json]

Each kernel call is timed on its own arguments (``tvm_fxp.runtime.profile``; the fastest of 5) and attributed
to its layer (``runtime.layer_times``: MACs, MACs per cycle); the JSON has every call and the totals per
kind of kernel (conv2d by layout, dense, residual adds/requantize, pools, quantize/dequantize).
"""

from __future__ import annotations

import os

os.environ["TVM_NUM_THREADS"] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections import defaultdict  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))

import tvm_fxp  # noqa: E402
from models224 import MODELS, images, write_model  # noqa: E402
from tvm_fxp.calibrate import calibrate  # noqa: E402
from tvm_fxp.methods import uniform  # noqa: E402
from tvm_fxp.report import timing_markdown  # noqa: E402
from tvm_fxp.runtime import cpu_ghz, layer_times, profile  # noqa: E402


def kind(kernel: str) -> str:
    if kernel.startswith("fxp_conv2d"):
        layout = [p for p in kernel.split("_epilogue")[0].split("_")[4:] if p != "w16"]   # fxp_conv2d_<data>_<acc>_
        return "conv2d " + "_".join(layout)
    if kernel.startswith("fxp_dense"):
        return "dense"
    for k in ("pool", "concat"):
        if k in kernel:
            return k
    return "elementwise (quantize, residual add, requantize, ...)"


def profile_model(name: str, tmp: Path, calib_images: int = 2) -> dict:
    prepared, lg = tvm_fxp.load_model(write_model(name, tmp))
    x = images(calib_images)
    stats = calibrate(prepared, lg, x, batch_size=calib_images, progress=False)
    q = tvm_fxp.bind_plan(prepared, lg, uniform.allocate(lg, stats, tvm_fxp.Uniform(8)))
    t = time.time()
    ex = tvm_fxp.build(q.realized())
    build_s = time.time() - t
    rows = layer_times(q, profile(ex, x[:1], repeats=5), 1)
    by_kind = defaultdict(float)
    for r in rows:
        by_kind[kind(r["kernel"])] += r["ms"]
    total = sum(r["ms"] for r in rows)
    macs = int(sum(layer.macs for layer in lg.layers.values()))
    print(f"\n## {name}: {total:.2f} ms, {macs / 1e9:.2f} GMACs, build {build_s:.0f} s\n")
    print("\n".join(f"  {v:8.3f} ms  {100 * v / total:5.1f} %  {k}" for k, v in sorted(by_kind.items(),
                                                                                      key=lambda kv: -kv[1])))
    print(timing_markdown(rows, top=12))
    return {"total_ms": total, "macs": macs, "build_s": round(build_s, 1),
            "ms_by_kind": dict(sorted(by_kind.items(), key=lambda kv: -kv[1])), "calls": rows}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="*", default=list(MODELS))
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "profile224.json"))
    args = p.parse_args(argv)
    result = {"cpu_ghz": cpu_ghz(), "threads": 1, "batch": 1, "plan": "Uniform(8), realized, tvm_fxp.build",
              "models": {}}
    with tempfile.TemporaryDirectory() as d:
        for name in args.models:
            result["models"][name] = profile_model(name, Path(d))
    Path(args.out).write_text(json.dumps(result, indent=1, default=float) + "\n")
    return result


if __name__ == "__main__":
    main()
