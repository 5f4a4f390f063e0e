"""The Relax build pipeline ``tvm_fxp.build`` uses on LLVM CPU targets.

TVM's default CPU pipeline (``tvm.relax.backend.cpu_generic``) with two additions:

1. ``FuseEpilogue`` (``fuse.py``) before ``LegalizeOps``: each integer conv2d/matmul and its requantize
   epilogue become one kernel that writes 8-bit results;
2. ``ScheduleElementwise`` (``elementwise.py``) after ``FuseTIR``: the remaining fused elementwise PrimFuncs
   (input quantize, residual adds, output dequantize) get their intermediates inlined and their loops
   vectorized.

Inside ``legalize.disabled()`` both additions are skipped (the module then compiles as with TVM's own
pipeline).  Neither changes what is computed; ``tests/schedules/test_fused.py`` checks bit-exactness against
the unfused graph.
"""

from __future__ import annotations

import tvm
from tvm.relax.backend.cpu_generic import pipeline as cpu

from .elementwise import ScheduleElementwise
from .fuse import FuseEpilogue
from .hostfuncs import separate_host_funcs
from .legalize import _cpu_target


def relax_pipeline(target: tvm.target.Target, fuse: bool = True) -> tvm.transform.Pass:
    """The pipeline for ``tvm.compile(mod, target, relax_pipeline=...)``; ``fuse=False``: TVM's CPU pipeline
    (``cpu_generic``: with ``FuseOps``/``FuseTIR``) without our two passes (for comparisons)."""

    @tvm.transform.module_pass(opt_level=0, name="tvm_fxp.schedules.relax_pipeline")
    def _pipeline(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        with target:
            ours = fuse and target.kind.name == "llvm" and _cpu_target() is not None
            passes = cpu.library_dispatch_passes(target)
            if ours:
                passes.append(FuseEpilogue())
            passes += cpu.legalize_passes(target)
            if ours:
                passes.append(ScheduleElementwise)
            passes += cpu.dataflow_lower_passes(target) + cpu.finalize_passes(target)
            if ours:
                passes.append(separate_host_funcs(target))
            return tvm.transform.Sequential(passes)(mod)

    return _pipeline


def applies(target: tvm.target.Target) -> bool:
    """Whether ``build`` uses this pipeline for ``target`` (an LLVM CPU target, outside ``disabled()``)."""
    with target:
        return target.kind.name == "llvm" and _cpu_target() is not None


def build(mod: tvm.IRModule, target: tvm.target.Target, fuse: bool = True):
    """``tvm.compile`` with ``relax_pipeline(target)`` where it ``applies`` (else TVM's default pipeline)."""
    if not fuse or not applies(target):
        return tvm.compile(mod, target=target)
    return tvm.compile(mod, target=target, relax_pipeline=relax_pipeline(target))
