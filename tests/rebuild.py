"""``rebuild_function``: re-emit a Relax function binding by binding through a rule (tests only).

The tests use it to tamper with a module or expose intermediate values; the passes are ``PyExprMutator``s.
"""

from typing import Callable

from tvm import relax

from tvm_fxp.passes.relax_utils import FxpGraphError, main_bindings
from tvm_fxp.schedules.common import remap_expr


BindingRule = Callable[[relax.BlockBuilder, object, object, dict], object]


def rebuild_function(func: relax.Function, rule: BindingRule, params: list | None = None,
                     prologue: Callable | None = None, epilogue: Callable | None = None) -> relax.Function:
    """Re-emit every binding of ``func`` through ``rule`` inside one dataflow block.

    ``rule(bb, binding, remapped_value, env)`` returns the new expression for the binding (it may emit
    helper bindings itself), or ``None`` to drop the binding (then it must have set ``env[binding.var]``).
    ``prologue(bb, env)`` runs first (e.g. to cast parameters), ``epilogue(bb, result, env)`` rewrites the result.
    """
    new_params = params if params is not None else list(func.params)
    env: dict = {old: new for old, new in zip(func.params, new_params)}
    bb = relax.BlockBuilder()
    attrs = dict(func.attrs) if func.attrs is not None else None
    with bb.function("main", new_params, attrs=attrs):
        with bb.dataflow():
            if prologue is not None:
                prologue(bb, env)
            for b in main_bindings(func):
                if not isinstance(b, relax.VarBinding):
                    raise FxpGraphError(f"binding of {b.var.name}: match_cast is not supported here")
                value = remap_expr(b.value, env)
                new = rule(bb, b, value, env)
                if new is None:
                    continue
                if isinstance(new, relax.Var):
                    env[b.var] = new
                else:
                    env[b.var] = bb.emit(new, b.var.name)
            result = remap_expr(func.body.body, env)
            if epilogue is not None:
                result = epilogue(bb, result, env)
            out = bb.emit_output(result)
        bb.emit_func_output(out)
    return bb.get()["main"]


def default_rule(bb, binding, value, env):
    return value
