"""The Relax build pipeline ``tvm_fxp.build`` uses on LLVM CPU targets (``tvm_fxp.schedules.pipeline``).

TVM's default CPU pipeline (``tvm.relax.backend.cpu_generic``) with our kernels as the legalization of
integer (and the simulation's float64) conv2d/matmul (``legalize.legalize_map``, given to ``LegalizeOps``;
nothing is registered globally), and three additions (the first preceded by ``FuseKTiles``, ``ktiles.py``: a
k-tiled int16 layer becomes one int32 layer where the target's kernel is as fast, the VNNI conv2d; then by
``SinkIntoConcat``, ``concat.py``: a concat's requantize applied to its inputs; and by ``BlockLayout``,
``layout.py``: NCHW16c activations between the VNNI layers):

1. ``FuseEpilogue`` (``fuse.py``) before ``LegalizeOps``: each integer conv2d/matmul and its requantize
   epilogue become one kernel that writes 8-bit results;
2. ``ScheduleElementwise`` (``elementwise.py``) after ``FuseTIR``: the remaining fused elementwise PrimFuncs
   (input quantize, residual adds, output dequantize) get their intermediates inlined and their loops
   vectorized;
3. ``FuseGraph`` (``graph.py``) after that: a small model's whole chain of kernel calls becomes one PrimFunc,
   one call per inference instead of a VM instruction stream around each kernel (not inside
   ``graph.per_kernel()``, for profiling).

Inside ``legalize.disabled()`` our kernels and the additions are skipped (the module then compiles as with
TVM's own pipeline).  Building the pipeline sizes TVM's thread pool to the physical cores (``threads.py``)
unless ``TVM_NUM_THREADS`` is set.  No addition changes what is computed;
``tests/schedules/test_fused.py`` checks bit-exactness against the unfused graph.
"""

from __future__ import annotations

import tvm
from tvm import relax
from tvm.relax.backend.cpu_generic import pipeline as cpu
from tvm.relax.utils import copy_with_new_vars

from .concat import SinkIntoConcat
from .elementwise import ScheduleElementwise
from .fuse import FuseEpilogue
from .graph import FuseGraph
from .ktiles import FuseKTiles
from .layout import BlockLayout
from .hostfuncs import separate_host_funcs
from .legalize import _cpu_target, legalize_map
from .threads import configure_pool


@tvm.transform.module_pass(opt_level=0, name="tvm_fxp.schedules.CopyFunctionVars")
def CopyFunctionVars(mod: tvm.IRModule, ctx) -> tvm.IRModule:  # noqa: N802 -- a pass, named like TVM's
    """Give every Relax function its own variables (``relax.utils.copy_with_new_vars``) when the module has
    several: ``FuseOps`` rejects a var defined in two functions, which modules built from one graph (e.g. a
    simulated and a realized ``main`` side by side) have; ``tvm.compile``'s default pipeline has no ``FuseOps``."""
    funcs = [(gv, f) for gv, f in mod.functions.items() if isinstance(f, relax.Function)]
    if len(funcs) < 2:
        return mod
    out = mod.shallow_copy() if hasattr(mod, "shallow_copy") else tvm.IRModule(dict(mod.functions), attrs=mod.attrs)
    for gv, f in funcs:
        out[gv] = copy_with_new_vars(f)
    return out


def legalize_passes(target: tvm.target.Target) -> list:
    """``cpu_generic.legalize_passes`` with our kernels as the legalization of conv2d/matmul."""
    passes = cpu.legalize_passes(target)
    assert passes[0].info.name == "LegalizeOps", passes[0].info.name
    return [relax.transform.LegalizeOps(customize_legalize_map=legalize_map())] + passes[1:]


def relax_pipeline(target: tvm.target.Target, fuse: bool = True, blocked: bool = True) -> tvm.transform.Pass:
    """The pipeline for ``tvm.compile(mod, target, relax_pipeline=...)``; ``fuse=False``: TVM's CPU pipeline
    (``cpu_generic``: with ``FuseOps``/``FuseTIR``) with our kernels but without our passes (for
    comparisons); ``blocked=False``: without ``BlockLayout`` (NCHW between all layers)."""
    target = tvm.target.Target(target) if isinstance(target, (str, dict)) else target
    configure_pool()

    @tvm.transform.module_pass(opt_level=0, name="tvm_fxp.schedules.relax_pipeline")
    def _pipeline(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        with target:
            ours = fuse and target.kind.name == "llvm" and _cpu_target() is not None
            passes = [CopyFunctionVars] + cpu.library_dispatch_passes(target)
            if ours:
                passes += [FuseKTiles(), SinkIntoConcat()] + ([BlockLayout()] if blocked else []) + [FuseEpilogue()]
            passes += legalize_passes(target)
            if ours:
                passes.append(ScheduleElementwise)
                passes.append(FuseGraph())
            passes += cpu.dataflow_lower_passes(target) + cpu.finalize_passes(target)
            if ours:
                passes.append(separate_host_funcs(target))
            return tvm.transform.Sequential(passes)(mod)

    return _pipeline


def applies(target: tvm.target.Target) -> bool:
    """Whether ``build`` uses this pipeline for ``target`` (an LLVM CPU target, outside ``disabled()``)."""
    with target:
        return target.kind.name == "llvm" and _cpu_target() is not None


def build(mod: tvm.IRModule, target: tvm.target.Target, fuse: bool = True, blocked: bool = True):
    """``tvm.compile`` with ``relax_pipeline(target)`` where it ``applies`` (else TVM's default pipeline)."""
    if not applies(target):
        return tvm.compile(mod, target=target)
    return tvm.compile(mod, target=target, relax_pipeline=relax_pipeline(target, fuse, blocked))
