"""CanonicalizeSum: ONNX ``Sum`` (imported as ``sum(stack((broadcast_to(a), b, ...)), axis=0)``) -> a chain of
``add``, so the layer graph sees one n-ary residual add.

Runs in ``Prepare``; ``add`` broadcasts like ``Sum``.  The stack and broadcasts are left to dead-code
elimination.
"""

from __future__ import annotations

import tvm
from tvm import relax

from .relax_utils import main_bindings, op_name, rebuild_function, remap_expr


def _sum_operands(value, producer) -> list | None:
    """The operands of ``sum(stack((broadcast_to(a), ...), axis=0), axis=[0])`` (how ONNX ``Sum`` imports)."""
    if op_name(value) != "relax.sum" or value.attrs.axis is None or [int(a) for a in value.attrs.axis] != [0] \
            or value.attrs.keepdims:
        return None
    stacked = producer.get(value.args[0])
    if op_name(stacked) != "relax.stack" or int(stacked.attrs.axis) != 0 or not isinstance(stacked.args[0], relax.Tuple):
        return None
    out = []
    for f in stacked.args[0].fields:
        p = producer.get(f)
        out.append(p.args[0] if op_name(p) == "relax.broadcast_to" else f)
    return out


def canonicalize_sum(func: relax.Function) -> relax.Function:
    """ONNX ``Sum`` -> ``add(add(a, b), c)``; ``add`` broadcasts like ``Sum``."""
    producer = {b.var: b.value for b in main_bindings(func)}
    if not any(_sum_operands(b.value, producer) for b in main_bindings(func)):
        return func

    def rule(bb, b, value, env):
        ops = _sum_operands(b.value, producer)
        if not ops:
            return value
        acc = remap_expr(ops[0], env)
        for i, o in enumerate(ops[1:]):
            acc = relax.op.add(acc, remap_expr(o, env))
            if i < len(ops) - 2:
                acc = bb.emit(acc, f"{b.var.name}_sum{i}")
        return acc

    return rebuild_function(func, rule)


@relax.transform.function_pass(opt_level=0, name="tvm_fxp.CanonicalizeSum")
class CanonicalizeSum:
    """ONNX ``Sum`` -> a chain of ``add``."""

    def transform_function(self, func: relax.Function, mod: tvm.IRModule, ctx) -> relax.Function:
        return canonicalize_sum(func)
