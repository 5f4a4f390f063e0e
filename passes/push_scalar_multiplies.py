"""PushScalarMultiplies: move a multiply/divide by a positive scalar constant towards its producer.

Runs in ``Prepare``, before ``FoldAffineIntoLayers``.  The scale passes ``clip``/``relu``/max pool/layout ops
and moves onto one operand of a product of two tensors (``clip(x + 3, 0, 6) / 6`` becomes
``clip(x / 6 + 0.5, 0, 1)``), so it can join an affine chain.  The ops inside a composite (LRN) are left alone.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax
from tvm.relax.expr_functor import PyExprMutator, mutator

from .analysis import composite_inner_vars
from .relax_utils import const_np, consumers, is_const, main_bindings, op_name


_PUSH_THROUGH = {"relax.clip", "relax.nn.relu", "relax.nn.max_pool2d", "relax.reshape", "relax.flatten",
                 "relax.permute_dims"}


def _positive_scalar_factor(value):
    """``(x, k)`` for ``x * k``, ``k * x`` or ``x / k`` with ``k`` a positive finite scalar constant."""
    name = op_name(value)
    if name not in ("relax.multiply", "relax.divide"):
        return None
    a, b = value.args
    if name == "relax.multiply" and is_const(a) and not is_const(b):
        a, b = b, a
    if not isinstance(a, relax.Var) or not is_const(b) or const_np(b).size != 1:
        return None
    k = float(const_np(b).reshape(()))
    if name == "relax.divide":
        k = 1.0 / k if k != 0 else 0.0
    return (a, k) if np.isfinite(k) and k > 0 else None


def push_scalar_multiplies(func: relax.Function, max_rounds: int = 64) -> relax.Function:
    """Move ``y * k`` (``k > 0`` scalar) above ``clip``/``relu``/max pool/layout ops and into one factor of a
    product of two tensors, one step per round, while the op it passes has no other user.  Exact in real
    arithmetic: ``clip(v, lo, hi) * k == clip(v * k, lo * k, hi * k)`` for ``k > 0`` and ``(a * b) * k ==
    a * (b * k)``."""
    for _ in range(max_rounds):
        bindings = main_bindings(func)
        users = consumers(func)
        producer = {b.var: b for b in bindings}
        result = func.body.body
        skip = composite_inner_vars(func)
        moves, alias = {}, {}
        for b in bindings:
            m = _positive_scalar_factor(b.value)
            if m is None or b.var in skip:
                continue
            x, k = m
            if x not in producer or x in moves or x.same_as(result) or len(users.get(x, [])) != 1 or x in skip:
                continue
            p = producer[x].value
            pname = op_name(p)
            if pname in _PUSH_THROUGH and isinstance(p.args[0], relax.Var):
                moves[x] = (k, 0)
            elif pname == "relax.multiply" and all(isinstance(a, relax.Var) and not is_const(a) for a in p.args):
                free = [i for i in (1, 0) if len(users.get(p.args[i], [])) == 1 and not p.args[0].same_as(p.args[1])]
                if not free:
                    continue
                moves[x] = (k, free[0])
            else:
                continue
            alias[b.var] = x
        if not moves:
            return func

        func = _ScalarPusher(None, moves, alias).visit_expr(func)
    return func


@mutator
class _ScalarPusher(PyExprMutator):
    """One round: ``y = p(...) * k`` becomes ``y = p(..., x_i * k, ...)`` (``moves``: var of ``p`` -> (k, i));
    the multiply's own binding (``alias``: its var -> ``p``'s var) is dropped and its uses read ``y``."""

    def __init__(self, mod, moves, alias):
        super().__init__(mod)
        self.moves, self.alias = moves, alias

    def visit_var_binding_(self, binding: relax.VarBinding) -> None:
        if binding.var in self.alias:
            moved = self.visit_expr(self.alias[binding.var])
            if isinstance(binding.var, relax.DataflowVar):
                return self.set_var_remap(binding.var, moved)
            return super().visit_var_binding_(relax.VarBinding(binding.var, moved))   # the result: an alias
        if binding.var not in self.moves:
            return super().visit_var_binding_(binding)
        value = self.visit_expr(binding.value)
        k, i = self.moves[binding.var]
        args = list(value.args)
        dtype = str(args[i].ty.dtype)
        args[i] = self.builder_.emit(relax.op.multiply(args[i], relax.const(np.asarray(k, dtype), dtype)),
                                     f"{binding.var.name}_scaled")
        if op_name(value) == "relax.clip":   # bounds as the tensor's dtype holds them (1/6 * 6 -> 1.0)
            lo, hi = (float(np.asarray(float(a.value) * k, dtype)) for a in value.args[1:])
            value = relax.op.clip(args[0], lo, hi)
        else:
            value = relax.Call(value.op, args, value.attrs, value.ty_args)
        super().visit_var_binding_(relax.VarBinding(binding.var, value))


@relax.transform.function_pass(opt_level=0, name="tvm_fxp.PushScalarMultiplies")
class PushScalarMultiplies:
    """Move positive scalar multiplies towards their producers."""

    def transform_function(self, func: relax.Function, mod: tvm.IRModule, ctx) -> relax.Function:
        return push_scalar_multiplies(func)
