"""``FuseEpilogue``: each integer conv2d/matmul and the elementwise epilogue after it -> one scheduled kernel.

A Relax module pass for the CPU build pipeline (``pipeline.py``), run *before* ``LegalizeOps`` with an LLVM
target in scope.  For every ``relax.nn.conv2d``/``relax.matmul`` that ``legalize.py`` would turn into one of
our kernels (``conv2d_plan_for``/``dense_plan_for``), it matches the epilogue DAG that follows
(``epilogue.match``: bias add, relu/clip, rounding shift, saturate, astype) and replaces the op and the whole
DAG with one ``call_tir`` of the kernel generated with that epilogue: the epilogue is applied to the
accumulator registers as they are written back, and only the 8-bit result reaches memory.  The kernel call is emitted
by the legalization's own ``legalize.emit_kernel`` (packed weights computed on the host at compile time); the epilogue's
per-channel constants become kernel arguments.  A conv2d/matmul without a matching epilogue, or one that is not
ours, is left for ``LegalizeOps`` unchanged -- except a layer that gets the bit-serial kernel (``bitserial.py``): that
choice rests on the data's range, read from its producer's saturate here, where the original bindings are still
in view, so it is emitted here, unfused.
"""

from __future__ import annotations

import tvm
from tvm import relax

from . import legalize as L
from .common import function_bindings, output_vars, reemit_function, remap_expr, rewrite_relax_functions, use_counts
from .epilogue import match

_KERNELS = ("relax.nn.conv2d", "relax.matmul")


def _emit_fused(bb, call, plan, epi, out_ty, suffix="", tensors=()):
    funcs = L.layer_primfuncs(call, plan, epi)
    return L.emit_kernel(bb, call, plan, funcs, L.layer_kind(call), epi, out_ty, suffix, tensors)


def fuse_function(func: relax.Function, target, bb: relax.BlockBuilder, suffix: str = "") -> tuple:
    """``(new function, number of fused layers)``; kernels are added to ``bb``'s module, their names ending
    in ``suffix`` (unique per function: each function is rewritten with its own builder)."""
    bindings = function_bindings(func)
    uses, outputs = use_counts(func), output_vars(func)
    fused: dict = {}       # binding index of the conv/matmul -> (plan, epilogue, last var)
    skip: set = set()
    bound = {b.var: b.value for b in bindings}
    for k, b in enumerate(bindings):
        v = b.value
        if k in skip or not isinstance(v, relax.Call) or not hasattr(v.op, "name") or str(v.op.name) not in _KERNELS:
            continue
        plan = L.layer_plan(v, target, bound.get)     # the original producers are still bound here
        if plan is None or plan.acc_dtype == "float64":     # the simulation's float kernels stay unfused
            continue
        axis = len(b.var.ty.shape) - 1
        if str(v.op.name) == "relax.nn.conv2d":
            axis = (1, 4) if str(v.attrs.out_layout) == L.BLOCKED else 1
        found = match(bindings, k, b.var, uses, outputs, axis, tensors=getattr(plan, "layout", None) == "vnni", claimed=skip)
        if found is None:
            if getattr(plan, "layout", None) == "bitserial":
                fused[k] = (plan, None, b.var)   # chosen on the producer's saturate, which LegalizeOps may not see
            continue
        epi, last_k, inside = found
        members = {i for i in range(k + 1, last_k + 1) if bindings[i].var in inside}
        # with tensor operands (a residual add) the kernel is called where the DAG ends: they all exist there
        at = last_k if epi.tensors else k
        fused[at] = (plan, epi, bindings[last_k].var, v)
        skip |= members | {k}      # (the binding at ``at`` is emitted as the fused kernel, see below)
    if not fused:
        return func, 0

    def emit_binding(k, b, env) -> bool:
        if k in fused:
            plan, epi, last, call = fused[k]
            env[last] = bb.emit(_emit_fused(bb, remap_expr(call, env), plan, epi, last.ty, suffix,
                                            [remap_expr(t, env) for t in epi.tensors]), last.name)
        return k in fused or k in skip

    return reemit_function(func, bb, emit_binding), len(fused)


@tvm.transform.module_pass(opt_level=0, name="tvm_fxp.schedules.FuseEpilogue")
class FuseEpilogue:
    """Fuse every integer conv2d/matmul with its elementwise epilogue into one kernel (see the module doc).

    Needs an LLVM target in scope (``with target:``); without one, or inside ``legalize.disabled()``, the
    module is returned unchanged.  ``self.fused`` counts the fused layers of the last run.
    """

    def __init__(self):
        self.fused = 0

    def transform_module(self, mod: tvm.IRModule, ctx) -> tvm.IRModule:
        target = L._cpu_target()
        self.fused = 0
        if target is None:
            return mod

        def rewrite(gv, func):
            bb = relax.BlockBuilder()
            nf, count = fuse_function(func, target, bb, "" if gv.name_hint == "main" else f"_{gv.name_hint}")
            return nf, count, {kgv: kf for kgv, kf in bb.get().functions.items() if kgv.name_hint != "main"}

        new, self.fused = rewrite_relax_functions(mod, rewrite)
        return new
