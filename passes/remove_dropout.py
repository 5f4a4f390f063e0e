"""RemoveDropout: ``dropout(x)[0]`` -> ``x`` (inference).

Runs in ``Prepare``.  The mask output, if used, is left alone; the dropout call itself is left to dead-code
elimination.
"""

from __future__ import annotations

import tvm
from tvm import relax
from tvm.relax.expr_functor import PyExprMutator, mutator

from .relax_utils import op_name


@mutator
class _DropoutRemover(PyExprMutator):
    def visit_tuple_getitem_(self, node: relax.TupleGetItem) -> relax.Expr:
        node = self.visit_expr_post_order(node)
        if node.index == 0 and isinstance(node.tuple_value, relax.Var):
            producer = self.lookup_binding(node.tuple_value)
            if op_name(producer) == "relax.nn.dropout":
                return producer.args[0]
        return node

    def visit_var_binding_(self, binding: relax.VarBinding) -> None:
        value = self.visit_expr(binding.value)
        if isinstance(value, relax.Var) and isinstance(binding.var, relax.DataflowVar):
            self.set_var_remap(binding.var, value)      # y = dropout(x)[0]: uses of y read x
        else:
            super().visit_var_binding_(binding)


@relax.transform.function_pass(opt_level=0, name="tvm_fxp.RemoveDropout")
class RemoveDropout:
    """Remove inference-time dropout: ``dropout(x)[0]`` -> ``x``; the mask output, if used, is left alone."""

    def transform_function(self, func: relax.Function, mod: tvm.IRModule, ctx) -> relax.Function:
        return _DropoutRemover(mod).visit_expr(func)
