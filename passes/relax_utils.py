"""Small helpers over TVM 0.27 Relax IR shared by the passes (no rewriting policy lives here)."""

from __future__ import annotations

from typing import Callable

import numpy as np
import tvm_ffi
import tvm
from tvm import relax
from tvm.ir.expr import GenericConst

from tvm_fxp.bounds import AccumulatorError
from tvm_fxp.formats import FormatError
from tvm_fxp.plan import PlanError
from tvm_fxp.statistics import CalibrationError


@tvm_ffi.register_error
class FxpGraphError(ValueError):
    """The graph cannot be handled; the message names the node and what to do."""


# the core's errors (TVM-free) cross TVM's FFI when a pass raises them: registered here so that they arrive
# with their own type, not as a RuntimeError
for _error in (AccumulatorError, CalibrationError, FormatError, PlanError):
    tvm_ffi.register_error(_error)


def op_name(expr) -> str | None:
    if isinstance(expr, relax.Call) and isinstance(expr.op, tvm.ir.Op):
        return expr.op.name
    return None


def is_const(expr) -> bool:
    return isinstance(expr, GenericConst)


def const_np(expr) -> np.ndarray:
    return expr.value.numpy()


def static_shape(expr) -> tuple | None:
    """Shape as a tuple of ints, with symbolic dims kept as their names (str)."""
    ty = expr.ty
    if not isinstance(ty, relax.TensorType) or ty.shape is None:
        return None
    out = []
    for s in ty.shape:
        out.append(int(s.value) if isinstance(s, tvm.tirx.IntImm) else str(s))
    return tuple(out)


def dtype_of(expr) -> str:
    return str(expr.ty.dtype)


def var_name(var) -> str:
    return var.name


def main_bindings(func: relax.Function) -> list:
    """All bindings of a function body, in order, across its blocks."""
    body = func.body
    if not isinstance(body, relax.SeqExpr):
        raise FxpGraphError("expected a function body made of binding blocks (run relax.transform.Normalize)")
    return [b for block in body.blocks for b in block.bindings]


def use_counts(func: relax.Function) -> dict:
    """How often each var is used (the function's result counts as one use)."""
    counts: dict = {}

    def visit(e):
        if isinstance(e, relax.Var):
            counts[e] = counts.get(e, 0) + 1
        elif isinstance(e, relax.Call):
            for a in e.args:
                visit(a)
        elif isinstance(e, relax.Tuple):
            for a in e.fields:
                visit(a)
        elif isinstance(e, relax.TupleGetItem):
            visit(e.tuple_value)

    for b in main_bindings(func):
        visit(b.value)
    visit(func.body.body)
    return counts


def consumers(func: relax.Function) -> dict:
    """var -> list of bindings that use it."""
    out: dict = {}

    def collect(e, acc):
        if isinstance(e, relax.Var):
            acc.append(e)
        elif isinstance(e, relax.Call):
            for a in e.args:
                collect(a, acc)
        elif isinstance(e, relax.Tuple):
            for a in e.fields:
                collect(a, acc)
        elif isinstance(e, relax.TupleGetItem):
            collect(e.tuple_value, acc)

    for b in main_bindings(func):
        used: list = []
        collect(b.value, used)
        for v in used:
            out.setdefault(v, []).append(b)
    return out


def rebind(mutator, binding: relax.VarBinding, value: relax.Expr) -> None:
    """Bind ``value`` to ``binding``'s var from a ``PyExprMutator``'s ``visit_var_binding_``: a var bound to a
    dataflow var is an alias, so its uses are remapped and no binding is emitted; anything else is re-emitted
    as ``ExprMutator`` does (a new var of the same name and kind when the type changes)."""
    if isinstance(value, relax.Var) and isinstance(binding.var, relax.DataflowVar):
        mutator.set_var_remap(binding.var, value)
        return
    value = mutator.builder_.normalize(value)
    var = mutator.with_type(mutator.visit_var_def(binding.var), value.ty)
    if not var.same_as(binding.var):
        mutator.set_var_remap(binding.var, var)
    mutator.builder_.emit_normalized(relax.VarBinding(var, value))


def map_relax_functions(mod: tvm.IRModule, fn: Callable[[relax.Function, str], relax.Function]) -> tvm.IRModule:
    """Apply ``fn`` to every Relax function of ``mod``; other functions are kept."""
    new_mod = tvm.IRModule(attrs=mod.attrs) if mod.attrs is not None else tvm.IRModule()
    for gv, func in mod.functions.items():
        if isinstance(func, relax.Function):
            nf = fn(func, gv.name_hint)
            nf = nf.with_attrs(func.attrs) if func.attrs is not None else nf
            new_mod[gv.name_hint] = nf
        else:
            new_mod[gv] = func
    return new_mod


def model_batch(mod: tvm.IRModule) -> int | None:
    """The batch size ``main``'s first input fixes (``1`` for ``1x3x224x224``), None when it is symbolic."""
    params = mod["main"].params
    if not params:
        return None
    ty = params[0].ty
    if not isinstance(ty, relax.TensorType) or ty.shape is None or len(ty.shape) == 0:
        return None
    first = ty.shape[0]
    return int(first.value) if isinstance(first, tvm.tirx.IntImm) else None
