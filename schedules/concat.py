"""``SinkIntoConcat``: the elementwise epilogue after a channel concat moves onto each concatenated input.

A Relax module pass for the CPU build pipeline (``cpu_pipeline.py``), run before ``BlockLayout`` and
``FuseEpilogue``.  ``Realize`` requantizes a concat of conv results once, after the concat (SqueezeNet's fire
modules: two int32 accumulators concatenated, then one rounding shift, saturate and ``astype`` to uint8), so
the concat moves int32 tensors and its producers' kernels cannot finish their epilogues.  The DAG after the
concat (``epilogue.match``: elementwise ops whose constants are scalars or one value per channel, intermediates
used only inside it) commutes with the concat: this pass applies it to each input (per-channel constants cut
to the input's channels) and concatenates the results, which ``FuseEpilogue`` then fuses into each producer's
kernel; the concat copies 8-bit values.  Same ops, same operand order on every element: the same integers.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax, tirx
from tvm.ir.expr import GenericConst

from .common import function_bindings, output_vars, reemit_function, remap_expr, rewrite_relax_functions, use_counts
from .epilogue import _per_channel, match


def _channels(var) -> int | None:
    ty = var.ty
    if not isinstance(ty, relax.TensorType) or ty.shape is None or len(ty.shape) != 4:
        return None
    c = list(ty.shape)[1]
    return int(c.value) if isinstance(c, tirx.IntImm) else None


def _cut(arg, lo: int, hi: int, shape: list):
    """A constant operand for channels ``[lo, hi)``: scalars stay, per-channel constants are sliced."""
    if not isinstance(arg, GenericConst):
        return arg
    c = arg.value.numpy()
    if c.size == 1:
        return arg
    line = _per_channel(c, shape, 1)
    return relax.const(np.ascontiguousarray(line[lo:hi]).reshape(1, hi - lo, 1, 1), str(c.dtype))


def sink_function(func: relax.Function, bb: relax.BlockBuilder) -> tuple:
    """``(new function, number of concats rewritten)``."""
    bindings = function_bindings(func)
    uses, outputs = use_counts(func), output_vars(func)
    plans: dict = {}        # index of the concat -> (last index, member indices)
    skip: set = set()
    for k, b in enumerate(bindings):
        v = b.value
        if not (isinstance(v, relax.Call) and hasattr(v.op, "name") and str(v.op.name) == "relax.concat"):
            continue
        if v.attrs.axis is None or int(v.attrs.axis) != 1 or not isinstance(v.args[0], relax.Tuple):
            continue
        fields = v.args[0].fields
        if not fields or any(not isinstance(f, relax.Var) or _channels(f) is None for f in fields) \
                or _channels(b.var) is None or b.var in outputs:
            continue
        found = match(bindings, k, b.var, uses, outputs, 1)
        if found is None:
            continue
        _, last_k, inside = found
        members = [i for i in range(k + 1, last_k + 1) if bindings[i].var in inside]
        plans[k] = (last_k, members)
        skip |= set(members)
    if not plans:
        return func, 0

    def emit_binding(k, b, env) -> bool:
        if k in skip:
            return True
        if k not in plans:
            return False
        last_k, members = plans[k]
        shape = [1] + [int(s) for s in list(b.var.ty.shape)[1:]]
        parts, lo = [], 0
        for field in remap_expr(b.value, env).args[0].fields:
            hi = lo + _channels(field)
            local = {b.var: field}
            for i in members:
                m = bindings[i]
                args = [local[a] if isinstance(a, relax.Var) and a in local else _cut(a, lo, hi, shape)
                        for a in m.value.args]
                local[m.var] = bb.emit(relax.Call(m.value.op, args, m.value.attrs, m.value.ty_args),
                                       f"{m.var.name}_part")
            parts.append(local[bindings[last_k].var])
            lo = hi
        env[bindings[last_k].var] = bb.emit(relax.op.concat(parts, axis=1), bindings[last_k].var.name)
        return True

    return reemit_function(func, bb, emit_binding), len(plans)


@tvm.transform.module_pass(opt_level=0, name="tvm_fxp.schedules.SinkIntoConcat")
class SinkIntoConcat:
    """Apply the elementwise epilogue of every channel concat to its inputs (see the module doc).
    ``self.rewritten`` counts the concats of the last run."""

    def __init__(self):
        self.rewritten = 0

    def transform_module(self, mod: tvm.IRModule, ctx) -> tvm.IRModule:
        def rewrite(gv, func):
            nf, count = sink_function(func, relax.BlockBuilder())
            return nf, count, {}

        new, self.rewritten = rewrite_relax_functions(mod, rewrite)
        return new
