"""RemoveDropout: ``dropout(x)[0]`` -> ``x`` (inference).

Runs in ``Prepare``.  The mask output, if used, is left alone; the dropout call itself is left to dead-code
elimination.
"""

from __future__ import annotations

import tvm
from tvm import relax

from .relax_utils import main_bindings, op_name, rebuild_function, remap_expr


def remove_dropout(func: relax.Function) -> relax.Function:
    """``dropout(x)[0]`` -> ``x`` (inference); the mask output, if used, is left alone."""
    producer = {b.var: b.value for b in main_bindings(func)}

    def dropout_input(value):
        if isinstance(value, relax.TupleGetItem) and value.index == 0 and \
                op_name(producer.get(value.tuple_value)) == "relax.nn.dropout":
            return producer[value.tuple_value].args[0]
        return None

    if not any(dropout_input(b.value) is not None for b in main_bindings(func)):
        return func

    def rule(bb, b, value, env):
        x = dropout_input(b.value)
        return value if x is None else remap_expr(x, env)

    return rebuild_function(func, rule)


@relax.transform.function_pass(opt_level=0, name="tvm_fxp.RemoveDropout")
class RemoveDropout:
    """Remove inference-time dropout."""

    def transform_function(self, func: relax.Function, mod: tvm.IRModule, ctx) -> relax.Function:
        return remove_dropout(func)
