"""Compile and run: ``build`` a Relax module for a target and run it over batches of inputs (``Runner``).

Calibration (``tvm_fxp.calibrate``), the plan scorer the searches use (``tvm_fxp.passes.plan_scorer``, handed
to the methods as an ``evaluate(plan)`` callback) and the CLI run their modules through here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tvm
from tvm import relax

from .batching import Batching, trim
from .passes.relax_utils import model_batch  # noqa: F401 -- tvm_fxp.model_batch


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
    """Run a compiled module over a batch of inputs, in chunks.

    ``batch``: the model's fixed batch size (``model_batch(mod)`` of the module that was built), None when the
    batch is dynamic; a fixed batch runs in chunks of exactly that size, the last one padded with copies of its
    last input and the padding trimmed from the outputs (``tvm_fxp.batching``).
    """

    def __init__(self, executable_or_path, device=None, batch: int | None = None):
        dev = device or tvm.cpu()
        ex = executable_or_path
        if isinstance(ex, (str, Path)):
            ex = tvm.runtime.load_module(str(ex))
        self.vm = relax.VirtualMachine(ex, dev)
        self.batch = batch

    def _call(self, xs: list):
        try:
            out = self.vm["main"](*[tvm.runtime.tensor(x) for x in xs])
        except Exception as e:   # a fixed-batch module run without its batch size
            if "mismatch to specified constant" in str(e) and self.batch is None:
                raise ValueError(f"the module has a fixed batch size and got {len(xs[0])} inputs at once: build "
                                 "the Runner with batch=tvm_fxp.model_batch(mod) of the module you built") from None
            raise
        return out.numpy() if isinstance(out, tvm.runtime.Tensor) else [o.numpy() for o in out]

    def batches(self, inputs, batch_size: int = 256):
        """Yield ``(index of the chunk's first input, output)`` per chunk; a tuple result as a list of arrays.
        ``inputs``: an array, a lazily decoded image folder (sliced one chunk at a time), or a list of arrays,
        one per model input."""
        arrays = list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]
        batching = Batching(self.batch, batch_size)
        for start, stop in batching.chunks(len(arrays[0])):
            xs = [batching.pad(np.ascontiguousarray(a[start:stop], dtype=np.float32)) for a in arrays]
            yield start, trim(self._call(xs), stop - start, len(xs[0]))

    def run(self, inputs, batch_size: int = 256):
        """The outputs over ``inputs`` (a list of arrays for a model with several inputs); a model with several
        outputs returns a list of arrays, one per output."""
        outs = [out for _, out in self.batches(inputs, batch_size)]
        if outs and isinstance(outs[0], list):
            return [np.concatenate(parts) for parts in zip(*outs)]
        return np.concatenate(outs) if outs else np.zeros((0,))
