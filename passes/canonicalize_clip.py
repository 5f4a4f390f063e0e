"""CanonicalizeClip: the ONNX importer's ``call_tir(maximum/minimum, x, c)`` -> ``relax.clip``.

Runs in ``Prepare``, right after constant folding: the importer lowers a Clip whose bounds are inputs to TE
``maximum``/``minimum`` PrimFuncs; turned back into ``clip``, later passes (the layer graph, Realize) see it.
"""

from __future__ import annotations

import tvm
from tvm import relax
from tvm.relax.expr_functor import PyExprMutator, mutator

from .relax_utils import const_np, is_const, op_name


_TE_CLIP = {"maximum": "lo", "minimum": "hi"}


def _te_clip_kind(call) -> str | None:
    """``lo``/``hi`` if ``call`` is ``call_tir`` of a TE ``maximum``/``minimum`` with a scalar constant."""
    if op_name(call) != "relax.call_tir":
        return None
    gv, args = call.args[0], call.args[1]
    base = gv.name_hint.rstrip("0123456789_")
    if base not in _TE_CLIP or len(args.fields) != 2 or not is_const(args.fields[1]):
        return None
    if const_np(args.fields[1]).size != 1:
        return None
    return _TE_CLIP[base]


@mutator
class _ClipCanonicalizer(PyExprMutator):
    def visit_call_(self, call: relax.Call) -> relax.Expr:
        call = self.visit_expr_post_order(call)
        kind = _te_clip_kind(call)
        if kind is None:
            return call
        x, c = call.args[1].fields
        c = float(const_np(c).reshape(()))
        return relax.op.clip(x, c, float("inf")) if kind == "lo" else relax.op.clip(x, float("-inf"), c)


@relax.transform.function_pass(opt_level=0, name="tvm_fxp.CanonicalizeClip")
class CanonicalizeClip:
    """Turn the ONNX importer's ``call_tir(maximum/minimum, x, c)`` (how it lowers Clip with input bounds)
    back into ``relax.clip`` so later passes see a clip."""

    def transform_function(self, func: relax.Function, mod: tvm.IRModule, ctx) -> relax.Function:
        return _ClipCanonicalizer(mod).visit_expr(func)
