"""Runs under qemu-aarch64 with the aarch64 Python and the runtime-only TVM (see test_arm_emulated.py).

``python3.11 arm_runner.py WORKDIR``: reads WORKDIR/manifest.json, runs every cross-compiled kernel and
model listed there on its inputs (and reads the block counters of kernels instrumented by
tools/kernel_cost.py), writes WORKDIR/results.npz.  It checks nothing itself: the host compares.
"""

import json
import platform
import sys
from pathlib import Path

import tvm  # first: loading tvm_ffi alone crashed on parallel kernels (ARM.md)
import numpy as np
from tvm.runtime.vm import VirtualMachine  # tvm.relax needs the compiler library, absent here

work = Path(sys.argv[1])
manifest = json.loads((work / "manifest.json").read_text())
results = {"machine": np.array(platform.machine())}
dev = tvm.cpu()
for case in manifest["kernels"]:
    lib = tvm.runtime.load_module(str(work / case["lib"]))
    inputs = np.load(work / case["inputs"])
    args = [tvm.runtime.tensor(inputs[name], dev) for name in case["args"]]
    out = tvm.runtime.empty(tuple(case["out_shape"]), case["out_dtype"], dev)
    lib[case["entry"]](*args, out)
    results[case["name"]] = out.numpy()
    if case.get("counters"):     # tools/kernel_cost.py: basic-block counters of an instrumented kernel
        import ctypes

        clib = ctypes.CDLL(str(work / case["lib"]))
        clib.fxp_block_counts_addr.restype = ctypes.c_void_p
        counts = (ctypes.c_uint64 * case["counters"]).from_address(clib.fxp_block_counts_addr())
        results[case["name"] + "__counts"] = np.array(counts, dtype=np.uint64)
for model in manifest["models"]:
    vm = VirtualMachine(tvm.runtime.load_module(str(work / model["lib"])), dev)
    x = np.load(work / model["inputs"])["x"]
    results[model["name"]] = vm["main"](tvm.runtime.tensor(x, dev)).numpy()
np.savez(work / "results.npz", **results)
print("ran", len(manifest["kernels"]), "kernels and", len(manifest["models"]), "models on", platform.machine())
