"""A default schedule for the fused elementwise/injective PrimFuncs the CPU pipeline leaves unscheduled.

``FuseOps``/``FuseTIR`` put a chain of elementwise ops (the input quantize, a residual add and its
requantize, the output dequantize, ...) into one PrimFunc, but keep one loop nest and one full-size
intermediate buffer per op; TVM's default CPU pipeline schedules none of them.  ``schedule_elementwise``
inlines every intermediate block into its consumer (``compute_inline``, else ``reverse_compute_inline``),
then, for each remaining all-spatial block, fuses its static loops and vectorizes the innermost power-of-two
chunk.  Reductions (pools) are left alone.  Inlining and loop transformations do not change what is computed.
"""

from __future__ import annotations

import tvm
from tvm import tirx
from tvm.s_tir import Schedule

from .legalize import KERNEL_ATTR

MAX_LANES = 64


def _blocks(sch):
    return list(sch.get_child_blocks(sch.get_sblock("root")))


def _is_spatial(sch, block) -> bool:
    b = sch.get(block)
    return all(iv.iter_type == tirx.IterVar.DataPar for iv in b.iter_vars) and b.init is None


def _static(loop) -> int | None:
    ext = loop.extent
    return int(ext.value) if isinstance(ext, tirx.IntImm) else None


def schedule_elementwise(func: tirx.PrimFunc) -> tirx.PrimFunc | None:
    """The scheduled function, or None when it has nothing to schedule (or is not of this kind)."""
    if func.attrs is not None and (KERNEL_ATTR in func.attrs or "tvm_fxp.scheduled" in func.attrs):
        return None
    sch = Schedule(func)
    try:
        blocks = _blocks(sch)
    except Exception:  # noqa: BLE001 -- no root block (already lowered)
        return None
    if not blocks:
        return None
    changed = False
    progress = True
    while progress:
        progress = False
        blocks = _blocks(sch)
        if len(blocks) <= 1:
            break
        for blk in blocks:
            if not _is_spatial(sch, blk):
                continue
            for inline in (sch.compute_inline, sch.reverse_compute_inline):
                try:
                    inline(blk)
                except Exception:  # noqa: BLE001 -- not inlinable (an output block, a reduction consumer, ...)
                    continue
                progress = changed = True
                break
            if progress:
                break
    for blk in _blocks(sch):
        if not _is_spatial(sch, blk):
            continue
        loops = sch.get_loops(blk)
        static = []
        for lp in reversed(loops):          # the innermost static loops
            ext = _static(sch.get(lp))
            if ext is None:
                break
            static.insert(0, lp)
        if not static:
            continue
        total = 1
        for lp in static:
            total *= _static(sch.get(lp))
        # lanes divide the innermost loop: a vector never straddles its end, so the fused index's div/mod
        # simplify to a ramp (a vector that straddles rows becomes a gather, slower than scalar code)
        inner = _static(sch.get(static[-1]))
        lanes = 1
        while lanes < MAX_LANES and inner % (lanes * 2) == 0:
            lanes *= 2
        if lanes < 4:
            continue
        fused = sch.fuse(*static) if len(static) > 1 else static[0]
        _, inner = sch.split(fused, [None, lanes])
        sch.vectorize(inner)
        changed = True
    if not changed:
        return None
    return sch.mod["main"].with_attr("tvm_fxp.scheduled", True)


@tvm.transform.module_pass(opt_level=0, name="tvm_fxp.schedules.ScheduleElementwise")
def ScheduleElementwise(mod: tvm.IRModule, ctx) -> tvm.IRModule:  # noqa: N802 -- a pass, named like TVM's
    """Apply ``schedule_elementwise`` to every PrimFunc that is not one of our kernels."""
    updates = {}
    for gv, func in mod.functions.items():
        if not isinstance(func, tirx.PrimFunc):
            continue
        try:
            new = schedule_elementwise(func)
        except Exception:  # noqa: BLE001 -- keep the unscheduled (correct) function
            new = None
        if new is not None:
            updates[gv] = new
    if not updates:
        return mod
    mod = mod.shallow_copy() if hasattr(mod, "shallow_copy") else mod
    for gv, f in updates.items():
        mod[gv] = f
    return mod
