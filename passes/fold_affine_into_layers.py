"""FoldAffineIntoLayers: fold per-channel scale/shift chains (batch-norm, Mul/Add) into the preceding layer.

Runs in ``Prepare``, after constants are folded and scalar multiplies pushed towards their producers.  Any
chain of per-channel ``add``/``subtract``/``multiply``/``divide`` by constants that follows a conv2d (NCHW/OIHW)
or matmul with constant weights, each op the only user of the one before, is folded into that layer's weights
and one bias, so every weighted layer reads ``add(conv2d(x, W), b)`` / ``add(matmul(x, W), b)``.  The
arithmetic is done in float64 and cast back to the weights' dtype.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax
from tvm.relax.expr_functor import PyExprMutator, mutator

from .relax_utils import const_np, consumers, is_const, main_bindings, op_name, static_shape


_AFFINE = {"relax.add", "relax.subtract", "relax.multiply", "relax.divide"}
_WEIGHTED = {"relax.nn.conv2d", "relax.matmul"}


def _channel_vector(c: np.ndarray, out_rank: int, channel_axis: int, channels: int) -> np.ndarray | None:
    """``c`` as a length-``channels`` vector if it broadcasts per output channel only, else None."""
    if c.ndim > out_rank:
        return None
    shape = (1,) * (out_rank - c.ndim) + c.shape
    for i, s in enumerate(shape):
        if i != channel_axis and s != 1:
            return None
    if shape[channel_axis] not in (1, channels):
        return None
    return np.broadcast_to(c.reshape(-1) if c.size > 1 else c.reshape(1), (channels,)).astype(np.float64)


def _fold_step(W, b, op, c_vec, const_first, w_axis):
    """Apply one elementwise op with a per-channel constant to the affine layer ``y = x*W + b``."""
    shape = [1] * W.ndim
    shape[w_axis] = W.shape[w_axis]
    cw = c_vec.reshape(shape)
    if op == "relax.add":
        return W, b + c_vec
    if op == "relax.subtract":
        return (-W, c_vec - b) if const_first else (W, b - c_vec)
    if op == "relax.multiply":
        return W * cw, b * c_vec
    if op == "relax.divide" and not const_first:
        if np.any(c_vec == 0):
            return None
        return W / cw, b / c_vec
    return None


def _affine_chains(func: relax.Function):
    """``(chains, skipped)``: chain-end var -> (anchor binding, W, bias, channel axis, output rank), and the
    vars of the anchors and inner chain ops the folded layer replaces."""
    bindings = main_bindings(func)
    users = consumers(func)
    producer = {b.var: b for b in bindings}
    result_vars = {func.body.body} if isinstance(func.body.body, relax.Var) else set()
    chains = {}  # chain-end var -> (anchor binding, W, b)
    skipped = set()
    for b in bindings:
        name = op_name(b.value)
        if name not in _WEIGHTED or not is_const(b.value.args[1]):
            continue
        if name == "relax.nn.conv2d":
            attrs = b.value.attrs
            if attrs.data_layout != "NCHW" or attrs.kernel_layout != "OIHW":
                continue
            out_axis, w_axis = 1, 0
        else:
            if len(static_shape(b.value.args[1])) != 2:
                continue
            out_axis, w_axis = -1, 1
        W = const_np(b.value.args[1]).astype(np.float64)
        channels = W.shape[w_axis]
        bias = np.zeros(channels)
        out_rank = len(static_shape(b.var))
        axis = out_axis % out_rank
        cur, chain = b.var, []
        while cur not in result_vars and len(users.get(cur, [])) == 1:
            nxt = users[cur][0]
            nop = op_name(nxt.value)
            if nop not in _AFFINE:
                break
            a0, a1 = nxt.value.args
            const_first = is_const(a0) and a1.same_as(cur)
            cexpr = a0 if const_first else a1
            if not is_const(cexpr) or (not const_first and not a0.same_as(cur)):
                break
            c_vec = _channel_vector(const_np(cexpr), out_rank, axis, channels)
            if c_vec is None:
                break
            step = _fold_step(W, bias, nop, c_vec, const_first, w_axis)
            if step is None:
                break
            W, bias = step
            chain.append(nxt.var)
            cur = nxt.var
        if chain:
            chains[cur] = (b, W, bias, axis, out_rank)
            skipped.update([b.var] + chain[:-1])

    return chains, skipped


@mutator
class _AffineFolder(PyExprMutator):
    def __init__(self, mod, chains, skipped):
        super().__init__(mod)
        self.chains, self.skipped = chains, skipped

    def visit_var_binding_(self, binding: relax.VarBinding) -> None:
        if binding.var in self.skipped:
            return                                            # replaced by the folded layer at the chain's end
        if binding.var not in self.chains:
            return super().visit_var_binding_(binding)
        anchor, W, bias, axis, out_rank = self.chains[binding.var]
        dtype = str(anchor.value.args[1].ty.dtype)
        new_w = relax.const(W.astype(dtype), dtype)
        layer = self.builder_.emit(relax.Call(anchor.value.op, [self.visit_expr(anchor.value.args[0]), new_w],
                                              anchor.value.attrs), anchor.var.name)
        bshape = [1] * out_rank
        bshape[axis] = bias.size
        folded = relax.op.add(layer, relax.const(bias.reshape(bshape).astype(dtype), dtype))
        super().visit_var_binding_(relax.VarBinding(binding.var, folded))


@relax.transform.function_pass(opt_level=0, name="tvm_fxp.FoldAffineIntoLayers")
class FoldAffineIntoLayers:
    """Fold per-channel scale/shift chains (batch-norm, Mul/Add) into the preceding conv2d/matmul."""

    def transform_function(self, func: relax.Function, mod: tvm.IRModule, ctx) -> relax.Function:
        chains, skipped = _affine_chains(func)
        return _AffineFolder(mod, chains, skipped).visit_expr(func) if chains else func
