"""CanonicalizeSum: ONNX ``Sum`` (imported as ``sum(stack((broadcast_to(a), b, ...)), axis=0)``) -> a chain of
``add``, so the layer graph sees one n-ary residual add.

Runs in ``Prepare``; ``add`` broadcasts like ``Sum``.  The stack and broadcasts are left to dead-code
elimination.
"""

from __future__ import annotations

import tvm
from tvm import relax
from tvm.relax.expr_functor import PyExprMutator, mutator

from .relax_utils import op_name


def _sum_operands(value, producer) -> list | None:
    """The operands of ``sum(stack((broadcast_to(a), ...), axis=0), axis=[0])`` (how ONNX ``Sum`` imports);
    ``producer(e)``: the value bound to ``e``, or None."""
    if op_name(value) != "relax.sum" or value.attrs.axis is None or [int(a) for a in value.attrs.axis] != [0] \
            or value.attrs.keepdims:
        return None
    stacked = producer(value.args[0])
    if op_name(stacked) != "relax.stack" or int(stacked.attrs.axis) != 0 or not isinstance(stacked.args[0], relax.Tuple):
        return None
    out = []
    for f in stacked.args[0].fields:
        p = producer(f)
        out.append(p.args[0] if op_name(p) == "relax.broadcast_to" else f)
    return out


@mutator
class _SumCanonicalizer(PyExprMutator):
    def visit_var_binding_(self, binding: relax.VarBinding) -> None:
        value = self.visit_expr(binding.value)
        ops = _sum_operands(value, lambda v: self.lookup_binding(v) if isinstance(v, relax.Var) else None)
        if not ops:
            return super().visit_var_binding_(binding)
        acc = ops[0]
        for i, o in enumerate(ops[1:]):
            acc = relax.op.add(acc, o)
            if i < len(ops) - 2:
                acc = self.builder_.emit(acc, f"{binding.var.name}_sum{i}")
        acc = self.builder_.normalize(acc)
        self.builder_.emit_normalized(relax.VarBinding(self.visit_var_def(binding.var), acc))


@relax.transform.function_pass(opt_level=0, name="tvm_fxp.CanonicalizeSum")
class CanonicalizeSum:
    """ONNX ``Sum`` -> a chain of ``add``; ``add`` broadcasts like ``Sum``."""

    def transform_function(self, func: relax.Function, mod: tvm.IRModule, ctx) -> relax.Function:
        return _SumCanonicalizer(mod).visit_expr(func)
