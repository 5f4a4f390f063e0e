"""Prepare a float Relax module for quantization: fold batch-norm and constants, canonicalise.

Must run before ``Annotate``, on a module straight from the ONNX importer (or any Relax module in NCHW
with constant weights).  After it:

- batch-norm, and any chain of per-channel ``add``/``subtract``/``multiply``/``divide`` by constants that
  follows a conv2d or matmul with constant weights, is folded into that layer's weights and one bias, so
  every weighted layer reads ``add(conv2d(x, W), b)`` / ``add(matmul(x, W), b)``;
- constant subgraphs (transposed Gemm weights, reshaped biases) are folded;
- inference-only decompositions are applied (batch-norm in inference mode, dropout removed) and dead code is
  eliminated.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax

from ._ir import (FxpGraphError, const_np, consumers, is_const, main_bindings, map_relax_functions,
                  op_name, rebuild_function, static_shape)

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


def fold_affine_into_layers(func: relax.Function) -> relax.Function:
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

    if not chains:
        return func

    def rule(bb, binding, value, env):
        if binding.var in skipped:
            return None
        if binding.var in chains:
            anchor, W, bias, axis, out_rank = chains[binding.var]
            dtype = str(anchor.value.args[1].ty.dtype)
            x = env.get(anchor.value.args[0], anchor.value.args[0])
            new_w = relax.const(W.astype(dtype), dtype)
            conv = bb.emit(relax.Call(anchor.value.op, [x, new_w], anchor.value.attrs), anchor.var.name)
            bshape = [1] * out_rank
            bshape[axis] = bias.size
            return relax.op.add(conv, relax.const(bias.reshape(bshape).astype(dtype), dtype))
        return value

    return rebuild_function(func, rule)


@tvm.transform.module_pass(opt_level=0, name="tvm_fxp.FoldAffineIntoLayers")
class FoldAffineIntoLayers:
    """Fold per-channel scale/shift chains (batch-norm, Mul/Add) into the preceding conv2d/matmul."""

    def transform_module(self, mod: tvm.IRModule, ctx) -> tvm.IRModule:
        return map_relax_functions(mod, lambda f, _: fold_affine_into_layers(f))


_TE_CLIP = {"maximum": "lo", "minimum": "hi"}


def _te_clip_kind(mod, call) -> str | None:
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


@tvm.transform.module_pass(opt_level=0, name="tvm_fxp.CanonicalizeClip")
class CanonicalizeClip:
    """Turn the ONNX importer's ``call_tir(maximum/minimum, x, c)`` (how it lowers Clip with input bounds)
    back into ``relax.clip`` so later passes see a clip."""

    def transform_module(self, mod: tvm.IRModule, ctx) -> tvm.IRModule:
        def fn(func, name):
            def rule(bb, b, value, env):
                kind = _te_clip_kind(mod, b.value)
                if kind is None:
                    return value
                x, c = value.args[1].fields
                c = float(const_np(c).reshape(()))
                return relax.op.clip(x, c, float("inf")) if kind == "lo" else relax.op.clip(x, float("-inf"), c)
            return rebuild_function(func, rule) if any(_te_clip_kind(mod, b.value) for b in main_bindings(func)) else func
        return map_relax_functions(mod, fn)


def _check_graph(mod: tvm.IRModule) -> tvm.IRModule:
    for gv, func in mod.functions.items():
        if not isinstance(func, relax.Function):
            continue
        for b in main_bindings(func):
            if op_name(b.value) == "relax.nn.batch_norm":
                raise FxpGraphError(f"{gv.name_hint}/{b.var.name}: batch_norm could not be decomposed; "
                                    "export the model in inference mode (model.eval())")
    return mod


def Prepare() -> tvm.transform.Pass:
    """The preparation pipeline (a ``tvm.transform.Sequential``): decompose, fold, clean up."""
    return tvm.transform.Sequential([
        relax.transform.DecomposeOpsForInference(),
        relax.transform.FoldConstant(),
        CanonicalizeClip(),
        relax.transform.DeadCodeElimination(),
        FoldAffineIntoLayers(),
        relax.transform.FoldConstant(),
        relax.transform.CanonicalizeBindings(),
        relax.transform.DeadCodeElimination(),
        tvm.transform.module_pass(lambda m, c: _check_graph(m), opt_level=0, name="tvm_fxp.CheckPrepared"),
    ], name="tvm_fxp.Prepare")
