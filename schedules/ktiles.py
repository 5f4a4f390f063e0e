"""``FuseKTiles``: a k-tiled int16 layer (several kernels, one per input-channel range) -> one kernel.

``Realize(accumulator="narrow")`` writes a layer whose bound needs more than 16 bits, but whose
input-channel ranges each provably fit int16 (``tvm_fxp.bounds.k_tiles``), as

    x_i    = strided_slice(x, axis=C, begin=c_i, end=c_{i+1})
    part_i = conv2d(x_i, W[:, c_i:c_{i+1}], out_dtype="int16")        (or matmul over K)
    sum    = astype(part_0, "int32") + astype(part_1, "int32") + ...

which builds to one kernel per tile, a slice copy per tile, and the widening adds between them (vgg on this
host: 0.118 ms vs 0.027 ms untiled).  Every ``part_i`` is the exact sum over its range (the proof), so
``sum`` is the exact sum over all channels, which the layer's int32 bound says fits int32: ONE
``conv2d(x, W, out_dtype="int32")`` gives the same integers.  This pass rewrites the pattern to that call
(before ``FuseEpilogue``, which then fuses the requantize epilogue into it) on targets whose int32 kernel
is faster than the tiles (``fusable``, per layer): the AVX-512 VNNI conv2d (``vpdpbusd`` sums u8 x s8
products in int32 lanes; the int16 plans run the same instruction and narrow) and AVX-512 matmuls.  Elsewhere
(NEON, AVX2) the int16 tiles stay: their int16 kernels issue twice the MACs of the widening int32 ones
(``bench/arm_ktiles.py``: tiles 0.52-0.68 of the int32 kernel's cycles on the A72).  Matched only as Realize writes it: contiguous ranges covering the channels in order,
constant weights, the same attributes on every tile, every intermediate used once.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax
from tvm.ir.expr import GenericConst

from . import legalize as L
from .common import function_bindings, reemit_function, remap_expr, rewrite_relax_functions, use_counts

_OPS = ("relax.nn.conv2d", "relax.matmul")


def _call(value, name: str):
    return value if isinstance(value, relax.Call) and hasattr(value.op, "name") and str(value.op.name) == name \
        else None


def _constant(expr):
    """The numpy value of an inline constant operand (Realize writes the tiles' weights inline), else None."""
    if isinstance(expr, GenericConst) and isinstance(expr.value, tvm.runtime.Tensor):
        return expr.value.numpy()
    return None


def _attr_key(call) -> tuple:
    a = call.attrs
    if str(call.op.name) == "relax.matmul":
        return ("matmul",)
    return ("conv2d", tuple(int(s) for s in a.strides), tuple(int(p) for p in a.padding),
            tuple(int(d) for d in a.dilation), int(a.groups), str(a.data_layout), str(a.kernel_layout))


def _tile(defs: dict, uses: dict, var) -> tuple | None:
    """``(x, axis, c0, c1, weight, op call, member vars)`` when ``var = astype(op(slice(x), W), int32)``."""
    wide = _call(defs.get(var), "relax.astype")
    if wide is None or str(wide.attrs.dtype) != "int32" or not isinstance(wide.args[0], relax.Var):
        return None
    part_var = wide.args[0]
    op = defs.get(part_var)
    if not isinstance(op, relax.Call) or not hasattr(op.op, "name") or str(op.op.name) not in _OPS:
        return None
    if str(op.attrs.out_dtype) != "int16" or _constant(op.args[1]) is None or uses.get(part_var) != 1:
        return None
    sl_var = op.args[0]
    sl = _call(defs.get(sl_var), "relax.strided_slice") if isinstance(sl_var, relax.Var) else None
    if sl is None or uses.get(sl_var) != 1 or not isinstance(sl.args[0], relax.Var):
        return None
    axes, begin, end, *strides = ([int(v.value) for v in t.fields] if isinstance(t, relax.Tuple) else None
                                  for t in sl.args[1:])
    if axes is None or begin is None or end is None or len(axes) != 1 or any(
            s is None or s != [1] for s in strides):
        return None
    x = sl.args[0]
    rank = len(x.ty.shape)
    axis = axes[0] % rank
    if axis != (1 if str(op.op.name) == "relax.nn.conv2d" else rank - 1):
        return None
    return x, axis, begin[0], end[0], _constant(op.args[1]), op, \
        [sl_var, part_var, var]


def _chain(defs: dict, uses: dict, var, top: bool) -> list | None:
    """The tiles of the add chain ending at ``var`` (each inner add used once), or None."""
    if not top and uses.get(var) != 1:
        return None
    add = _call(defs.get(var), "relax.add")
    if add is not None and all(isinstance(a, relax.Var) for a in add.args):
        parts = [_chain(defs, uses, a, False) for a in add.args]
        if any(p is None for p in parts):
            return None
        return [*parts[0], *parts[1], ("add", var)]
    tile = _tile(defs, uses, var)
    return None if tile is None else [tile]


def match(func: relax.Function) -> dict:
    """``{binding var of the last add: (x, op call, [tiles], member vars)}`` of every k-tiled layer."""
    bindings = function_bindings(func)
    defs = {b.var: b.value for b in bindings}
    uses = use_counts(func)
    found, taken = {}, set()
    for b in reversed(bindings):
        if b.var in taken or _call(b.value, "relax.add") is None:
            continue
        items = _chain(defs, uses, b.var, True)
        if items is None:
            continue
        tiles = sorted((t for t in items if t[0] != "add"), key=lambda t: t[2])
        if len(tiles) < 2 or len({t[0] for t in tiles}) != 1 or len({_attr_key(t[5]) for t in tiles}) != 1:
            continue
        x, axis = tiles[0][0], tiles[0][1]
        channels = int(x.ty.shape[axis])
        bounds = [t[2] for t in tiles] + [tiles[-1][3]]
        if bounds[0] != 0 or bounds[-1] != channels or any(t[3] != n for t, n in zip(tiles, bounds[1:])):
            continue
        members = [v for t in tiles for v in t[6]] + [i[1] for i in items if i[0] == "add"]
        found[b.var] = (x, tiles[0][5], [t[4] for t in tiles], members)
        taken.update(members)
    return found


def fused_call(x, op, weights: list):
    """One int32 ``op`` over all channels: the tiles' weights concatenated along the input channels."""
    if str(op.op.name) == "relax.nn.conv2d":
        w = relax.const(np.ascontiguousarray(np.concatenate(weights, axis=1)))
        a = op.attrs
        return relax.op.nn.conv2d(x, w, strides=a.strides, padding=a.padding, dilation=a.dilation,
                                  groups=a.groups, data_layout=a.data_layout, kernel_layout=a.kernel_layout,
                                  out_layout=a.out_layout, out_dtype="int32")
    w = relax.const(np.ascontiguousarray(np.concatenate(weights, axis=0)))
    return relax.op.matmul(x, w, out_dtype="int32")


def fusable(call, target) -> bool:
    """Whether one int32 kernel of ``call`` beats its int16 tiles on ``target``: the VNNI conv2d (int32 lanes
    whatever the plan's accumulator, so the tiles only add passes), and matmuls on AVX-512 (measured: vgg's
    1568x128 layer as 7 tiles vs one int32 kernel, 0.095 vs 0.091 ms per model).  NEON keeps the tiles:
    ``bench/arm_ktiles.py`` (whole kernels, Cortex-A72 model) puts the int16 tiles at 0.52-0.68 of our widening
    int32 kernel's cycles (``smlal .4s``) and at 0.93-1.14 of the paired gemmlowp/ruy kernel's (the build's
    aarch64 int32 kernel where the weights prove its pair sums; the tiles' slices and adds uncounted), so
    fusing them into it is no clear win; AVX2 keeps them too (``vpmaddubsw`` pair sums accumulate in int16)."""
    from .targets import kernel_config

    if kernel_config(target, "int32").arch != "x86-avx512":
        return False
    if str(call.op.name) == "relax.matmul":
        return L.dense_plan_for(call, target) is not None
    plan = L.conv2d_plan_for(call, target)
    return plan is not None and plan.layout == "vnni"


def fuse_function(func: relax.Function, target) -> tuple:
    """``(new function, number of fused k-tiled layers)``."""
    found = match(func)
    rewrite = {}
    for top, (x, op, weights, members) in found.items():
        call = fused_call(x, op, weights)
        if fusable(call, target):      # the planner reads the operands' types and the attributes only
            rewrite[top] = (call, set(members) - {top})
    if not rewrite:
        return func, 0
    drop = set().union(*(m for _, m in rewrite.values()))
    bb = relax.BlockBuilder()

    def emit_binding(k, b, env) -> bool:
        if b.var in rewrite and b.var not in drop:
            env[b.var] = bb.emit(remap_expr(rewrite[b.var][0], env), b.var.name)
        return b.var in rewrite or b.var in drop

    return reemit_function(func, bb, emit_binding), len(rewrite)


@tvm.transform.module_pass(opt_level=0, name="tvm_fxp.schedules.FuseKTiles")
class FuseKTiles:
    """Rewrite every k-tiled int16 layer to one int32 layer where the target's kernel makes that as fast (see
    the module doc).  Needs an LLVM target in scope; ``self.fused`` counts the layers of the last run."""

    def __init__(self):
        self.fused = 0

    def transform_module(self, mod: tvm.IRModule, ctx) -> tvm.IRModule:
        target = L._cpu_target()
        self.fused = 0
        if target is None:
            return mod
        new, self.fused = rewrite_relax_functions(mod, lambda gv, func: (*fuse_function(func, target), {}))
        return new
