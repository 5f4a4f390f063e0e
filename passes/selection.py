"""CanonicalizeSelections: rewrite the imported forms of detector/segmenter ops into ops the layer graph knows.

Runs inside ``Prepare``, after constant folding and before ``FoldAffineIntoLayers`` (so a ConvTranspose's bias
folds into the conv2d it becomes).  Every rewrite is exact in real arithmetic:

- ``split(x)`` and its ``TupleGetItem`` users become one ``strided_slice`` per piece (no tuples between layers);
- ONNX ``Max``/``Min`` (imported as ``max(stack((broadcast_to(a), ...)), axis=0)``) become chains of
  ``maximum``/``minimum`` of the operands (one layer: operands aligned to the finest scale, compared);
- ONNX ``Pad`` (imported as ``call_tir`` of TOPI's ``pad``/``replicate_pad``/``mirror_pad``) becomes
  ``relax.nn.pad`` with the same widths and mode (``constant``/``replicate``/``reflect``), which stays on the
  integer grid and legalizes for integer tensors.  The widths are read off the TIR function by running it once
  on an index ramp and checking the one ``numpy.pad`` that reproduces it;
- ``conv2d_transpose(x, W)`` (ConvTranspose, any groups, padding and output padding) becomes one ``conv2d`` of
  its ``s_h * s_w`` phases on the input itself (output ``y[s j + r]`` takes the taps ``W[s m + r]``: a kernel
  ``ceil(k / s)`` wide per phase, ``O * s_h * s_w`` output channels), its bias add and relu/clip moved before a
  depth-to-space (``reshape``, ``permute_dims``, ``reshape``) and the crop of the padding (``strided_slice``):
  the learned upsampling of segmenters is then an ordinary conv2d layer (formats, bounds, narrow accumulators
  and kernels of conv2d) doing the transposed convolution's own multiply-accumulates (with ``k`` a multiple of
  ``s``; else ``ceil(k/s)**2 s**2 / k**2`` of them, e.g. 16/9 for ``k = 3, s = 2``), not the ``s**2`` times as
  many of a conv over the zero-inserted input;
- ``resize2d(x, method="linear")`` with an integer scale factor ``s`` per axis (``half_pixel``,
  ``pytorch_half_pixel`` or ``align_corners`` when it degenerates to the same weights) becomes an edge pad, the
  zero insertion and a depthwise conv2d whose constant kernel holds the interpolation weights (multiples of
  ``1 / (2 s)``, hence exact integers at a power-of-two scale for ``s`` a power of two): bilinear upsampling with
  integer weights, its accumulator proven like any conv2d's.

Nearest-neighbour ``resize2d`` needs no rewrite: it selects input values, so it is a pass-through op
(``analysis.PASS_THROUGH``).
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax
from tvm.relax.expr_functor import PyExprMutator, mutator

from .relax_utils import FxpGraphError, const_np, consumers, is_const, main_bindings, map_relax_functions, op_name, \
    rebind, static_shape

_PAD_FUNCS = {"pad": "constant", "replicate_pad": "replicate", "mirror_pad": "reflect", "reflect_pad": "reflect"}
_NP_MODE = {"constant": "constant", "replicate": "edge", "reflect": "reflect"}


def _call_tir_pad(mod, value):
    """``(mode, pad_width, constant)`` of a ``call_tir`` of a TOPI pad function, or None."""
    if op_name(value) != "relax.call_tir":
        return None
    gv, args = value.args[0], value.args[1]
    base = gv.name_hint.rstrip("0123456789_")
    if base not in _PAD_FUNCS or len(args.fields) != 1 or not isinstance(value.ty, relax.TensorType):
        return None
    in_shape, out_shape = static_shape(args.fields[0]), static_shape(value)
    if in_shape is None or out_shape is None or len(in_shape) != len(out_shape):
        return None
    if isinstance(in_shape[0], str) or isinstance(out_shape[0], str):
        if in_shape[0] != out_shape[0]:
            return None
        in_shape, out_shape = (1,) + in_shape[1:], (1,) + out_shape[1:]
    if any(isinstance(d, str) for d in in_shape + out_shape):
        return None
    mode = _PAD_FUNCS[base]
    ramp = (np.arange(int(np.prod(in_shape)), dtype=np.float32) + 1).reshape(in_shape)
    try:
        f = tvm.compile(tvm.IRModule({"main": mod[gv].with_attr("global_symbol", "main")}), target="llvm")
        out = tvm.runtime.tensor(np.zeros(out_shape, np.float32))
        f["main"](tvm.runtime.tensor(ramp), out)
        out = out.numpy()
    except Exception:   # not a plain ramp-runnable pad: leave it (analysis names the node)
        return None
    totals = [o - i for i, o in zip(in_shape, out_shape)]
    if any(t < 0 for t in totals):
        return None
    axes = [a for a, t in enumerate(totals) if t > 0]
    const = 0.0
    if mode == "constant":
        idx = [slice(None)] * len(out_shape)
        hit = out[~np.isin(out, ramp)] if axes else np.array([])
        const = float(hit.reshape(-1)[0]) if hit.size else 0.0
    for befores in np.ndindex(*[totals[a] + 1 for a in axes]):
        widths = [(0, 0)] * len(in_shape)
        for a, b in zip(axes, befores):
            widths[a] = (int(b), totals[a] - int(b))
        kw = {"constant_values": const} if mode == "constant" else {}
        if np.array_equal(np.pad(ramp, widths, mode=_NP_MODE[mode], **kw), out):
            return mode, [w for pair in widths for w in pair], const
    return None


def _zero_insert(bb, x, s: tuple, name: str):
    """``x`` (NCHW) with ``s - 1`` zeros between neighbours along H and W: shape ``(H-1)*sh+1, (W-1)*sw+1``."""
    n, c = x.ty.shape[0], x.ty.shape[1]
    h, w = static_shape(x)[2:]
    sh, sw = s
    if sh == 1 and sw == 1:
        return x
    y = bb.emit(relax.op.reshape(x, (n, c, h, 1, w, 1)), f"{name}_6d")
    y = bb.emit(relax.op.nn.pad(y, [0, 0, 0, 0, 0, 0, 0, sh - 1, 0, 0, 0, sw - 1]), f"{name}_zeros")
    y = bb.emit(relax.op.reshape(y, (n, c, h * sh, w * sw)), f"{name}_ins")
    return bb.emit(relax.op.strided_slice(y, axes=[2, 3], begin=[0, 0], end=[(h - 1) * sh + 1, (w - 1) * sw + 1]),
                   f"{name}_dil")


def _crop_or_pad(bb, x, pads, name):
    """conv2d padding ``pads`` (top, left, bottom, right); negative entries crop the input instead."""
    if all(p >= 0 for p in pads):
        return x, list(pads)
    h, w = static_shape(x)[2:]
    t, l, b, r = pads
    x = bb.emit(relax.op.strided_slice(x, axes=[2, 3], begin=[max(-t, 0), max(-l, 0)],
                                       end=[h - max(-b, 0), w - max(-r, 0)]), f"{name}_crop")
    return x, [max(t, 0), max(l, 0), max(b, 0), max(r, 0)]


def _phase_kernel(W: np.ndarray, groups: int, s: tuple) -> np.ndarray:
    """The conv2d kernel of a ConvTranspose's ``s[0] * s[1]`` phases: ``W`` is ``(I, O/g, kh, kw)``; output channel
    ``(c * sh + rh) * sw + rw`` (``c`` the ConvTranspose's output channel, groups kept contiguous) computes the
    outputs ``y[s * j + r]`` from ``x[j - m]`` with taps ``W[s * m + r]`` (``m < M = ceil(k / s)``), flipped for a
    correlation: ``(O * sh * sw, I / g, Mh, Mw)``, zero where ``s * m + r >= k``."""
    i_all, og, kh, kw = W.shape
    (sh, sw), ig = s, i_all // groups
    mh, mw = -(-kh // sh), -(-kw // sw)
    padded = np.zeros((i_all, og, mh * sh, mw * sw), W.dtype)
    padded[:, :, :kh, :kw] = W
    # taps[i, o, m, r] = W[i, o, s*m + r]; flip m (correlation), then order as (group, o, rh, rw, i, mh, mw)
    taps = padded.reshape(groups, ig, og, mh, sh, mw, sw)[:, :, :, ::-1, :, ::-1, :]
    out = taps.transpose(0, 2, 4, 6, 1, 3, 5)
    return np.ascontiguousarray(out.reshape(groups * og * sh * sw, ig, mh, mw))


def _conv_transpose(bb, value, name, orig, tail):
    """ConvTranspose as ``s**2`` phase convolutions on the input itself (one conv2d with ``O * s**2`` output
    channels, kernels ``ceil(k / s)`` wide), its bias and activation (``tail``: the single-user chain after it), then
    depth-to-space (reshape, transpose, reshape: pass-through) and the crop of the padding: every multiply-accumulate
    is one of the transposed convolution's own (``k`` a multiple of ``s``; else ``ceil(k/s)**2 * s**2 / k**2``
    of them, zero taps), instead of ``s**2`` times as many over a zero-inserted input."""
    a = value.attrs
    x, w = value.args
    shape = static_shape(orig.args[0])
    why = None
    if not is_const(w):
        why = "its weights are not constant"
    elif a.data_layout != "NCHW" or a.kernel_layout != "IOHW":
        why = f"layout {a.data_layout}/{a.kernel_layout} (NCHW/IOHW only)"
    elif any(int(d) != 1 for d in a.dilation):
        why = f"dilations {[int(d) for d in a.dilation]} (1 only)"
    elif shape is None or any(isinstance(d, str) for d in shape[1:]):
        why = "its input has no static channel/spatial shape"
    if why is not None:
        raise FxpGraphError(f"node {name} (ConvTranspose, relax.nn.conv2d_transpose): {why} is not supported")
    W = const_np(w)                                  # (I, O/g, kh, kw)
    groups = int(a.groups)
    _, og, kh, kw = W.shape
    h, wd = shape[2:]
    out_h, out_w = static_shape(orig)[2:]
    s = tuple(int(v) for v in a.strides)
    p = [int(v) for v in a.padding]                  # top, left, bottom, right
    dtype = str(w.ty.dtype)
    kernel = _phase_kernel(W, groups, s)
    pads, first = [], []
    for (k_, s_, n_in, n_out, top) in ((kh, s[0], h, out_h, p[0]), (kw, s[1], wd, out_w, p[1])):
        m = -(-k_ // s_)
        j0, j1 = top // s_, -(-(top + n_out) // s_)    # the phase rows that hold outputs top .. top + n_out - 1
        pads.append((m - 1 - j0, j1 - 1 - (n_in - 1)))   # y'[s j + r] reads x[j - m'] (m' < m): x padded/cropped
        first.append(top - j0 * s_)
    xin, conv_pads = _crop_or_pad(bb, x, [pads[0][0], pads[1][0], pads[0][1], pads[1][1]], name)
    out = bb.emit(relax.op.nn.conv2d(xin, relax.const(kernel.astype(dtype)), padding=conv_pads, groups=groups,
                                     out_dtype=dtype), f"{name}_phases")
    n, o, (sh, sw) = orig.ty.shape[0], og * groups, s
    for op in tail:                                  # bias (per phase channel) and activation, before the shuffle
        if op_name(op) == "relax.add":
            per_channel = np.broadcast_to(const_np(op.args[1]).reshape(-1), (o,))
            bias = np.repeat(per_channel, sh * sw).reshape(1, -1, 1, 1)
            out = bb.emit(relax.op.add(out, relax.const(bias.astype(dtype))), f"{name}_bias")
        else:
            out = bb.emit(relax.Call(op.op, [out] + list(op.args[1:]), op.attrs), f"{name}_act")
    jh, jw = [int(d) for d in static_shape(out)[2:]] if static_shape(out) else (None, None)
    y = bb.emit(relax.op.reshape(out, (n, o, sh, sw, jh, jw)), f"{name}_6d")
    y = bb.emit(relax.op.permute_dims(y, [0, 1, 4, 2, 5, 3]), f"{name}_shuffle")
    y = bb.emit(relax.op.reshape(y, (n, o, jh * sh, jw * sw)), f"{name}_d2s")
    return relax.op.strided_slice(y, axes=[2, 3], begin=first, end=[first[0] + out_h, first[1] + out_w])


def _per_channel(c: np.ndarray, channels: int) -> bool:
    """``c`` broadcasts against NCHW along the channel axis only (or is a scalar)."""
    if c.size == 1:
        return c.ndim <= 4
    shape = (1,) * (4 - c.ndim) + c.shape if c.ndim <= 4 else None
    return shape is not None and shape[1] == channels and c.size == channels


def _conv_transpose_tail(b, users, out_channels):
    """The single-user chain after a ConvTranspose that moves before its depth-to-space: a per-channel constant
    bias add, then relu/clip."""
    chain, v = [], b.var
    while len(users.get(v, [])) == 1:
        u = users[v][0]
        e = u.value
        if op_name(e) == "relax.add" and not chain and e.args[0].same_as(v) and is_const(e.args[1]) and \
                _per_channel(const_np(e.args[1]), out_channels):
            chain.append(u)
        elif op_name(e) in ("relax.nn.relu", "relax.clip") and e.args[0].same_as(v):
            chain.append(u)
        else:
            break
        v = u.var
    return chain


def _linear_taps(s: int, mode: str):
    """``(t0, k)``: linear interpolation by the integer factor ``s`` is ``y[m] = sum_t k[t] * z[m + t0 + t]`` on
    ``z``, the input edge-padded by one and zero-inserted (sample ``j`` of the padded input at ``s * j``); or None.

    Output ``m`` reads source coordinate ``u(m)`` (``half_pixel``: ``(m + 0.5) / s - 0.5``, ``asymmetric``:
    ``m / s``), which sits at ``s * (u + 1) = m + c`` on ``z``; the weight of a sample at distance ``d`` is the
    triangle ``1 - |d| / s``, so ``k[t] = 1 - |t0 + t - c| / s``: multiples of ``1 / (2 s)``."""
    centers = {"half_pixel": (s + 1) / 2, "pytorch_half_pixel": (s + 1) / 2, "asymmetric": float(s)}
    if mode not in centers:
        return None
    c = centers[mode]
    ds = [d for d in range(-2 * s, 3 * s + 1) if abs(d - c) < s]
    return ds[0], np.array([1 - abs(d - c) / s for d in ds])


def _bilinear(bb, value, name, orig):
    a = value.attrs
    x = value.args[0]
    shape = static_shape(x)
    if a.method != "linear" or a.layout != "NCHW" or shape is None or any(isinstance(d, str) for d in shape[1:]):
        return None
    c, h, w = shape[1:]
    oh, ow = static_shape(orig)[2:]
    if oh % h or ow % w or oh < 2 or ow < 2:
        return None
    mode = str(a.coordinate_transformation_mode)
    sh, sw = oh // h, ow // w
    th, tw = _linear_taps(sh, mode), _linear_taps(sw, mode)
    if th is None or tw is None:
        return None
    (t0h, k1), (t0w, k2) = th, tw
    dtype = str(x.ty.dtype)
    xp = bb.emit(relax.op.nn.pad(x, [0, 0, 0, 0, 1, 1, 1, 1], "replicate"), f"{name}_edge")
    z = _zero_insert(bb, xp, (sh, sw), name)
    lh, lw = (h + 1) * sh + 1, (w + 1) * sw + 1
    # y[m] reads z[m + t0 + t], m < out, t < len(k): conv padding (negative: crop) so that every window fits
    pads = [-t0h, -t0w, oh - 1 + t0h + len(k1) - lh, ow - 1 + t0w + len(k2) - lw]
    z, pads = _crop_or_pad(bb, z, pads, name)
    kernel = np.outer(k1, k2).reshape(1, 1, len(k1), len(k2))
    wt = np.ascontiguousarray(np.broadcast_to(kernel, (c, 1, len(k1), len(k2))))
    return relax.op.nn.conv2d(z, relax.const(wt.astype(dtype)), padding=pads, groups=c, out_dtype=dtype)


def _stacked_operands(value, producer, reduce_op):
    """Operands of ``reduce_op(stack((broadcast_to(a), ...), axis=0), axis=[0])`` (ONNX Max/Min/Sum)."""
    if op_name(value) != reduce_op or value.attrs.axis is None or [int(v) for v in value.attrs.axis] != [0] \
            or value.attrs.keepdims:
        return None
    stacked = producer.get(value.args[0])
    if op_name(stacked) != "relax.stack" or int(stacked.attrs.axis) != 0 or not isinstance(stacked.args[0], relax.Tuple):
        return None
    out = []
    for f in stacked.args[0].fields:
        p = producer.get(f)
        out.append(p.args[0] if op_name(p) == "relax.broadcast_to" and
                   static_shape(p.args[0]) == static_shape(value) else f)
    return out


_REWRITTEN = ("relax.split", "relax.max", "relax.min", "relax.call_tir", "relax.nn.conv2d_transpose",
              "relax.image.resize2d")


@mutator
class _SelectionRewriter(PyExprMutator):
    def __init__(self, mod: tvm.IRModule, func: relax.Function):
        super().__init__(mod)
        self.mod = mod
        self.producer = {b.var: b.value for b in main_bindings(func)}
        self.users = consumers(func)
        self.pieces: dict = {}
        self.folded: dict = {}  # bias/activation after a ConvTranspose, moved before its depth-to-space: -> its result

    def visit_var_binding_(self, binding: relax.VarBinding) -> None:
        if binding.var in self.folded:      # folded into the ConvTranspose's phases: dropped, the last one aliased
            if self.folded[binding.var] is not None:
                rebind(self, binding, self.visit_expr(self.folded[binding.var]))
            return
        rebind(self, binding, self._rewrite(binding, self.visit_expr(binding.value)))

    def _rewrite(self, b: relax.VarBinding, value: relax.Expr) -> relax.Expr:
        bb, producer, pieces, mod = self.builder_, self.producer, self.pieces, self.mod
        name = op_name(value)
        if isinstance(b.value, relax.TupleGetItem) and b.value.tuple_value in pieces:
            return pieces[b.value.tuple_value][b.value.index]
        if name == "relax.split":
            x = value.args[0]
            shape = static_shape(b.value.args[0])
            axis = int(value.attrs.axis) % len(shape)
            ind = value.attrs.indices_or_sections
            size = shape[axis]
            if isinstance(size, str):
                return value
            if isinstance(ind, (tvm.tirx.IntImm, int)):
                n = int(ind)
                step = -(-size // n)
                cuts = [min(i * step, size) for i in range(1, n)]
            else:
                cuts = [int(v) for v in ind]
            bounds = [0] + cuts + [size]
            outs = [bb.emit(relax.op.strided_slice(x, axes=[axis], begin=[s0], end=[s1]), f"{b.var.name}_{i}")
                    for i, (s0, s1) in enumerate(zip(bounds[:-1], bounds[1:]))]
            pieces[b.var] = outs
            return relax.Tuple(outs)
        if name in ("relax.max", "relax.min"):
            ops = _stacked_operands(b.value, producer, name)
            if ops:
                fn = relax.op.maximum if name == "relax.max" else relax.op.minimum
                acc = self.visit_expr(ops[0])
                for i, o in enumerate(ops[1:]):
                    acc = fn(acc, self.visit_expr(o))
                    if i < len(ops) - 2:
                        acc = bb.emit(acc, f"{b.var.name}_{i}")
                return acc
        if name == "relax.call_tir":
            pad = _call_tir_pad(mod, b.value)
            if pad is not None:
                mode, widths, const = pad
                return relax.op.nn.pad(value.args[1].fields[0], widths, mode, const)
        if name == "relax.nn.conv2d_transpose":
            w = b.value.args[1]
            tail = _conv_transpose_tail(b, self.users, static_shape(b.value)[1]) if is_const(w) else []
            out = bb.emit(_conv_transpose(bb, value, b.var.name, b.value, [t.value for t in tail]), b.var.name)
            for t in tail[:-1]:
                self.folded[t.var] = None
            if tail:
                self.folded[tail[-1].var] = b.var
            return out
        if name == "relax.image.resize2d" and value.attrs.method == "linear":
            out = _bilinear(bb, value, b.var.name, b.value)
            if out is not None:
                return out
        return value


@tvm.transform.module_pass(opt_level=0, name="tvm_fxp.CanonicalizeSelections")
class CanonicalizeSelections:
    """Split, Max/Min, Pad, ConvTranspose and bilinear Resize into the ops the layer graph realizes; a
    ConvTranspose it cannot rewrite (dilated, non-constant weights, another layout) is refused naming the node."""

    def transform_module(self, mod: tvm.IRModule, ctx) -> tvm.IRModule:
        out = map_relax_functions(mod, lambda f, _: _SelectionRewriter(mod, f).visit_expr(f)
                                  if any(op_name(b.value) in _REWRITTEN for b in main_bindings(f)) else f)
        return relax.transform.DeadCodeElimination()(out)
