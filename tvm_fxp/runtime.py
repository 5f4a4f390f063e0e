"""Compile and run: ``build`` a Relax module for a target and run it over batches of inputs (``Runner``).

Calibration (``tvm_fxp.calibrate``), the plan scorer the searches use (``tvm_fxp.passes.plan_scorer``, handed
to the methods as an ``evaluate(plan)`` callback) and the CLI run their modules through here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tvm
from tvm import relax


def host_target() -> tvm.target.Target:
    """LLVM for this machine's CPU (so LLVM may use its vector extensions)."""
    return tvm.target.Target({"kind": "llvm", "mcpu": tvm.target.codegen.llvm_get_system_cpu()})


def build(mod: tvm.IRModule, target=None):
    """Compile a (float, simulated or realized) module to a VM executable (default: the host CPU).

    On LLVM CPU targets the Relax pipeline is ``tvm_fxp.schedules.pipeline``: TVM's CPU pipeline with our
    integer kernels as the legalization of conv2d/matmul, the fusion of every integer conv2d/matmul with its
    requantize epilogue into one scheduled kernel, and vectorized elementwise kernels (same results, bit for
    bit).  Inside ``tvm_fxp.schedules.disabled()``, and on other targets, it is ``tvm.compile``'s default.
    """
    from .schedules import cpu_pipeline

    target = target or host_target()
    if isinstance(target, (str, dict)):
        target = tvm.target.Target(target)
    return cpu_pipeline.build(mod, target)


class Runner:
    """Run a compiled module over a batch of inputs, in chunks (the model has a dynamic batch dimension)."""

    def __init__(self, executable_or_path, device=None):
        dev = device or tvm.cpu()
        ex = executable_or_path
        if isinstance(ex, (str, Path)):
            ex = tvm.runtime.load_module(str(ex))
        self.vm = relax.VirtualMachine(ex, dev)

    def batches(self, inputs: np.ndarray, batch_size: int = 256):
        """Yield ``(index of the chunk's first input, output)`` per chunk; a tuple result as a list of arrays."""
        for s in range(0, len(inputs), batch_size):
            x = np.ascontiguousarray(inputs[s:s + batch_size], dtype=np.float32)
            out = self.vm["main"](tvm.runtime.tensor(x))
            yield s, (out.numpy() if isinstance(out, tvm.runtime.Tensor) else [o.numpy() for o in out])

    def run(self, inputs: np.ndarray, batch_size: int = 256) -> np.ndarray:
        outs = [out for _, out in self.batches(inputs, batch_size)]
        return np.concatenate(outs) if outs else np.zeros((0,))
