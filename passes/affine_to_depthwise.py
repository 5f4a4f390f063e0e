"""AffineToDepthwise: a per-channel (or scalar) affine chain on an activation -> a depthwise 1x1 conv2d + bias.

Runs in ``Prepare``, after ``FoldAffineIntoLayers``: the chains left follow no conv/matmul they could fold into
(batch-norm after a concat, ``x + 3`` of hard-swish, input normalisation).  Each becomes a scale and a shift per
channel whose formats the plan chooses like any other layer's.  The ops inside a composite (LRN) are left alone.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax
from tvm.relax.expr_functor import PyExprMutator, mutator

from .analysis import composite_inner_vars
from .fold_affine_into_layers import _AFFINE, _WEIGHTED, _channel_vector
from .relax_utils import const_np, consumers, is_const, main_bindings, op_name, static_shape


def _affine_step(value):
    """``(x, c, op, const_first)`` for an add/subtract/multiply/divide of a tensor and a constant."""
    name = op_name(value)
    if name not in _AFFINE:
        return None
    a0, a1 = value.args
    if is_const(a1) and isinstance(a0, relax.Var):
        return a0, const_np(a1), name, False
    if is_const(a0) and isinstance(a1, relax.Var):
        return a1, const_np(a0), name, True
    return None


def _compose_affine(scale, shift, op, c, const_first):
    """``(scale, shift)`` of ``y = x*scale + shift`` followed by one more op with the per-channel ``c``."""
    if op == "relax.add":
        return scale, shift + c
    if op == "relax.subtract":
        return (-scale, c - shift) if const_first else (scale, shift - c)
    if op == "relax.multiply":
        return scale * c, shift * c
    if op == "relax.divide" and not const_first and np.all(c != 0):
        return scale / c, shift / c
    return None


def _affine_chains(func: relax.Function):
    """``(chains, inner)``: chain-end var -> (input, scale, shift, shape, activations) for every remaining
    per-channel affine chain on a rank-2 or rank-4 activation, and the chains' other vars."""
    bindings = main_bindings(func)
    users = consumers(func)
    result = func.body.body
    results = {result}
    producer = {b.var: b.value for b in bindings}
    skip = composite_inner_vars(func)
    chains, inner, taken = {}, set(), set()
    for b in bindings:
        if b.var in taken or b.var in skip:
            continue
        step = _affine_step(b.value)
        if step is None:
            continue
        x = step[0]
        if op_name(producer.get(x)) in _WEIGHTED and len(users.get(x, [])) == 1:
            continue   # the bias add FoldAffineIntoLayers left after its conv/matmul
        shape = static_shape(b.var)
        if shape is None or len(shape) not in (2, 4) or not isinstance(shape[1], int) or \
                str(b.var.ty.dtype) not in ("float32", "float64", "float16"):
            continue
        channels = shape[1]
        scale, shift = np.ones(channels), np.zeros(channels)
        cur, members = b, []
        while True:
            _, c, op, const_first = _affine_step(cur.value)
            c_vec = _channel_vector(c, len(shape), 1, channels)
            nxt = None if c_vec is None else _compose_affine(scale, shift, op, c_vec, const_first)
            if nxt is None:
                break
            scale, shift = nxt
            members.append(cur.var)
            us = users.get(cur.var, [])
            if cur.var.same_as(result) or len(us) != 1 or us[0].var in skip:
                break
            s = _affine_step(us[0].value)
            if s is None or not s[0].same_as(cur.var) or static_shape(us[0].var) != shape:
                break
            cur = us[0]
        if not members:
            continue
        acts = []
        if len(shape) == 2:   # keep the activations that follow in 4-D, so they fuse into the conv layer
            end = members[-1]
            while end not in results and len(users.get(end, [])) == 1 and \
                    op_name(users[end][0].value) in ("relax.clip", "relax.nn.relu") and \
                    users[end][0].value.args[0].same_as(end):
                acts.append(users[end][0])
                end = users[end][0].var
            members += [a.var for a in acts]
        chains[members[-1]] = (x, scale, shift, shape, [a.value for a in acts])
        inner.update(members[:-1])
        taken.update(members)
    return chains, inner


@mutator
class _DepthwiseRewriter(PyExprMutator):
    """Each chain end rebinds to a depthwise 1x1 conv2d plus bias (rank 2 through a reshape to ``(N, C, 1, 1)``
    and back, with the activations that follow kept in 4-D); the chain's inner bindings are dropped."""

    def __init__(self, mod, chains, inner):
        super().__init__(mod)
        self.chains, self.inner = chains, inner

    def visit_var_binding_(self, binding: relax.VarBinding) -> None:
        if binding.var in self.inner:
            return
        if binding.var not in self.chains:
            return super().visit_var_binding_(binding)
        bb, name = self.builder_, binding.var.name
        x, scale, shift, shape, acts = self.chains[binding.var]
        x = self.visit_expr(x)
        dtype = str(binding.var.ty.dtype)
        c = shape[1]
        if len(shape) == 2:
            n = binding.var.ty.shape[0]
            x = bb.emit(relax.op.reshape(x, (n, c, 1, 1)), f"{name}_4d")
        w = relax.const(scale.reshape(c, 1, 1, 1).astype(dtype), dtype)
        y = bb.emit(relax.op.nn.conv2d(x, w, groups=c), f"{name}_dw")
        y = relax.op.add(y, relax.const(shift.reshape(1, c, 1, 1).astype(dtype), dtype))
        if len(shape) == 2:
            y = bb.emit(y, f"{name}_affine")
            for i, act in enumerate(acts):
                y = bb.emit(relax.Call(act.op, [y] + list(act.args[1:]), act.attrs, act.ty_args), f"{name}_act{i}")
            y = relax.op.reshape(y, (binding.var.ty.shape[0], c))
        super().visit_var_binding_(relax.VarBinding(binding.var, y))


@relax.transform.function_pass(opt_level=0, name="tvm_fxp.AffineToDepthwise")
class AffineToDepthwise:
    """Per-channel affine chains on activations -> depthwise 1x1 conv2d + bias."""

    def transform_function(self, func: relax.Function, mod: tvm.IRModule, ctx) -> relax.Function:
        chains, inner = _affine_chains(func)
        return _DepthwiseRewriter(mod, chains, inner).visit_expr(func) if chains else func
