"""Prepare a float Relax module for quantization: fold batch-norm and constants, canonicalise.

Must run before ``Annotate``, on a module straight from the ONNX importer (or any Relax module in NCHW
with constant weights).  After it:

- batch-norm, and any chain of per-channel ``add``/``subtract``/``multiply``/``divide`` by constants that
  follows a conv2d or matmul with constant weights, is folded into that layer's weights and one bias, so
  every weighted layer reads ``add(conv2d(x, W), b)`` / ``add(matmul(x, W), b)``;
- constant subgraphs (transposed Gemm weights, reshaped biases) are folded;
- inference-only decompositions are applied (batch-norm in inference mode, dropout removed) and dead code is
  eliminated;
- ONNX ``Sum`` (imported as ``sum(stack(broadcast_to(a), ...))``) becomes a chain of ``add`` (one n-ary
  residual add for the layer graph);
- a multiply/divide by a positive scalar constant is moved towards its producer through ``clip``/``relu``/
  max pool/layout ops and onto one operand of a product of two tensors (``clip(x + 3, 0, 6) / 6`` becomes
  ``clip(x / 6 + 0.5, 0, 1)``), so it can join an affine chain;
- a per-channel (or scalar) affine chain on an activation that follows no conv/matmul it could fold into
  (batch-norm after a concat, ``x + 3`` of hard-swish, input normalisation) becomes a depthwise 1x1 conv2d
  with a bias: a scale and a shift per channel, whose formats the plan chooses like any other layer's.

The local response normalisation the ONNX importer decomposes (``x / (k + a/n * sum x^2)^b``) is left as it
is; ``analysis`` recognises it as one ``lrn`` layer and the affine passes do not touch its inner ops.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax

from ._ir import (FxpGraphError, const_np, consumers, is_const, main_bindings, map_relax_functions,
                  op_name, rebuild_function, remap_expr, static_shape)
from .analysis import composite_inner_vars

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


# ---- dropout, Sum ---------------------------------------------------------------------------------------------

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


def _sum_operands(value, producer) -> list | None:
    """The operands of ``sum(stack((broadcast_to(a), ...), axis=0), axis=[0])`` (how ONNX ``Sum`` imports)."""
    if op_name(value) != "relax.sum" or value.attrs.axis is None or [int(a) for a in value.attrs.axis] != [0] \
            or value.attrs.keepdims:
        return None
    stacked = producer.get(value.args[0])
    if op_name(stacked) != "relax.stack" or int(stacked.attrs.axis) != 0 or not isinstance(stacked.args[0], relax.Tuple):
        return None
    out = []
    for f in stacked.args[0].fields:
        p = producer.get(f)
        out.append(p.args[0] if op_name(p) == "relax.broadcast_to" else f)
    return out


def canonicalize_sum(func: relax.Function) -> relax.Function:
    """ONNX ``Sum`` -> ``add(add(a, b), c)``; ``add`` broadcasts like ``Sum``."""
    producer = {b.var: b.value for b in main_bindings(func)}
    if not any(_sum_operands(b.value, producer) for b in main_bindings(func)):
        return func

    def rule(bb, b, value, env):
        ops = _sum_operands(b.value, producer)
        if not ops:
            return value
        acc = remap_expr(ops[0], env)
        for i, o in enumerate(ops[1:]):
            acc = relax.op.add(acc, remap_expr(o, env))
            if i < len(ops) - 2:
                acc = bb.emit(acc, f"{b.var.name}_sum{i}")
        return acc

    return rebuild_function(func, rule)


# ---- scalar multiplies towards their producer -------------------------------------------------------------

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

        def rule(bb, b, value, env):
            if b.var in alias:
                return env[alias[b.var]]
            if b.var not in moves:
                return value
            k, i = moves[b.var]
            args = list(value.args)
            dtype = str(args[i].ty.dtype)
            args[i] = bb.emit(relax.op.multiply(args[i], relax.const(np.asarray(k, dtype), dtype)),
                              f"{b.var.name}_scaled")
            if op_name(value) == "relax.clip":   # bounds as the tensor's dtype holds them (1/6 * 6 -> 1.0)
                lo, hi = (float(np.asarray(float(a.value) * k, dtype)) for a in value.args[1:])
                return relax.op.clip(args[0], lo, hi)
            return relax.Call(value.op, args, value.attrs, value.ty_args)

        func = rebuild_function(func, rule)
    return func


# ---- affine chains on activations -> depthwise 1x1 conv2d -------------------------------------------------

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


def affine_to_depthwise(func: relax.Function) -> relax.Function:
    """Rewrite every remaining per-channel affine chain on a rank-2 or rank-4 activation as a depthwise 1x1
    conv2d plus bias (rank 2 through a reshape to ``(N, C, 1, 1)`` and back)."""
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
    if not chains:
        return func

    def rule(bb, b, value, env):
        if b.var in inner:
            return None
        if b.var not in chains:
            return value
        x, scale, shift, shape, acts = chains[b.var]
        x = remap_expr(x, env)
        dtype = str(b.var.ty.dtype)
        c = shape[1]
        if len(shape) == 2:
            n = b.var.ty.shape[0]
            x = bb.emit(relax.op.reshape(x, (n, c, 1, 1)), f"{b.var.name}_4d")
        w = relax.const(scale.reshape(c, 1, 1, 1).astype(dtype), dtype)
        y = bb.emit(relax.op.nn.conv2d(x, w, groups=c), f"{b.var.name}_dw")
        y = relax.op.add(y, relax.const(shift.reshape(1, c, 1, 1).astype(dtype), dtype))
        if len(shape) == 2:
            y = bb.emit(y, f"{b.var.name}_affine")
            for i, act in enumerate(acts):
                y = bb.emit(relax.Call(act.op, [y] + list(act.args[1:]), act.attrs, act.ty_args), f"{b.var.name}_act{i}")
            y = relax.op.reshape(y, (b.var.ty.shape[0], c))
        return y

    return rebuild_function(func, rule)


def _function_pass(fn, name):
    return tvm.transform.module_pass(lambda m, c: map_relax_functions(m, lambda f, _: fn(f)), opt_level=0,
                                     name=name)


def RemoveDropout() -> tvm.transform.Pass:
    return _function_pass(remove_dropout, "tvm_fxp.RemoveDropout")


def CanonicalizeSum() -> tvm.transform.Pass:
    return _function_pass(canonicalize_sum, "tvm_fxp.CanonicalizeSum")


def PushScalarMultiplies() -> tvm.transform.Pass:
    return _function_pass(push_scalar_multiplies, "tvm_fxp.PushScalarMultiplies")


def AffineToDepthwise() -> tvm.transform.Pass:
    return _function_pass(affine_to_depthwise, "tvm_fxp.AffineToDepthwise")


# ---- constant folding in numpy --------------------------------------------------------------------------------

def _shape_values(e) -> list | None:
    if isinstance(e, relax.ShapeExpr) and all(isinstance(v, tvm.tirx.IntImm) for v in e.values):
        return [int(v.value) for v in e.values]
    return None


def _axes(a):
    return None if a is None else [int(v) for v in a]


_NUMPY_BINARY = {"relax.add": np.add, "relax.subtract": np.subtract, "relax.multiply": np.multiply,
                 "relax.divide": np.divide, "relax.power": np.power, "relax.maximum": np.maximum,
                 "relax.minimum": np.minimum}
_NUMPY_UNARY = {"relax.sqrt": np.sqrt, "relax.rsqrt": lambda v: 1 / np.sqrt(v), "relax.negative": np.negative,
                "relax.exp": np.exp, "relax.isnan": np.isnan}


def _fold_call(value, known: dict):
    """The numpy value of a call whose tensor operands are all constant (``known``: var -> array of vars
    folded already), or None (leave it to TVM)."""
    name = op_name(value)
    if name is None or not value.args:
        return None

    def arr(e):
        if is_const(e):
            return const_np(e)
        return known.get(e) if isinstance(e, relax.Var) else None

    args = value.args
    a = arr(args[0])
    if a is None or not isinstance(value.ty, relax.TensorType):
        return None
    with np.errstate(all="ignore"):
        if name in _NUMPY_BINARY and len(args) == 2 and arr(args[1]) is not None:
            r = _NUMPY_BINARY[name](a, arr(args[1]))
        elif name in _NUMPY_UNARY:
            r = _NUMPY_UNARY[name](a)
        elif name == "relax.where" and all(arr(x) is not None for x in args):
            r = np.where(a, arr(args[1]), arr(args[2]))
        elif name == "relax.expand_dims":
            r = np.expand_dims(a, tuple(_axes(value.attrs.axis)))
        elif name == "relax.squeeze":
            axes = _axes(value.attrs.axis)
            r = np.squeeze(a, None if axes is None else tuple(axes))
        elif name == "relax.permute_dims":
            r = np.transpose(a, _axes(value.attrs.axes))
        elif name in ("relax.reshape", "relax.broadcast_to") and _shape_values(args[1]) is not None:
            shape = _shape_values(args[1])
            r = a.reshape(shape) if name == "relax.reshape" else np.broadcast_to(a, shape)
        elif name == "relax.astype":
            r = a
        else:
            return None
    r = np.array(r, dtype=str(value.ty.dtype), order="C")
    if value.ty.shape is None or list(r.shape) != [int(d) if isinstance(d, tvm.tirx.IntImm) else -1
                                                   for d in value.ty.shape]:
        return None
    return r


def fold_constants_numpy(func: relax.Function) -> relax.Function:
    """Fold the constant subgraphs exporters and the importer leave (batch-norm statistics, reshaped or
    transposed weights, clip bounds) in numpy: ``relax.transform.FoldConstant`` compiles every such op with
    LLVM, seconds per model.  Anything not handled here is left to it."""
    known: dict = {}
    for b in main_bindings(func):
        r = _fold_call(b.value, known)
        if r is not None:
            known[b.var] = r
    if not known:
        return func

    def rule(bb, b, value, env):
        r = known.get(b.var)
        return value if r is None else relax.const(r, str(r.dtype))

    return rebuild_function(func, rule)


def FoldConstantsNumpy() -> tvm.transform.Pass:
    return _function_pass(fold_constants_numpy, "tvm_fxp.FoldConstantsNumpy")


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
    from .selection import CanonicalizeSelections

    return tvm.transform.Sequential([
        relax.transform.DecomposeOpsForInference(),
        FoldConstantsNumpy(),
        relax.transform.FoldConstant(),
        CanonicalizeClip(),
        RemoveDropout(),
        CanonicalizeSum(),
        CanonicalizeSelections(),
        relax.transform.CanonicalizeBindings(),
        relax.transform.DeadCodeElimination(),
        PushScalarMultiplies(),
        FoldAffineIntoLayers(),
        AffineToDepthwise(),
        FoldConstantsNumpy(),
        relax.transform.FoldConstant(),
        relax.transform.CanonicalizeBindings(),
        relax.transform.DeadCodeElimination(),
        tvm.transform.module_pass(lambda m, c: _check_graph(m), opt_level=0, name="tvm_fxp.CheckPrepared"),
    ], name="tvm_fxp.Prepare")
