"""``BlockLayout``: activations kept blocked (NCHW16c) between consecutive integer layers on the VNNI path.

A Relax module pass for the CPU build pipeline (``cpu_pipeline.py``), run *before* ``FuseEpilogue`` (and so
before ``LegalizeOps``) with an LLVM target in scope.  The VNNI conv2d kernel (``conv2d_vnni.py``) reads 4
consecutive channels of a position per ``vpdpbusd`` and produces 16 output channels of a position per
register; with NCHW tensors between layers every conv transposes its input into channel groups and its output
back (at 224x224 those transposes cost more than the arithmetic of the layers with few channels and large
maps).  This pass chooses the layout once, for the whole graph:

- every integer conv2d that ``legalize.py`` would run on the VNNI kernel writes ``(N, C/16, H, W, 16)``
  (``out_layout="NCHW16c"``, output channels padded to 16 with zero weights) and reads a blocked input as is
  (``data_layout="NCHW16c"``; its weights get zero rows for the padding channels);
- depthwise convs (dilation 1, AVX-512 VBMI) run on the blocked tensors (``conv2d_depthwise.py``'s blocked
  kernel), channel for channel;
- the ops between convs run on the blocked tensors: the elementwise epilogues and residual adds whose constants
  are scalars or one value per channel (the constants are blocked alike), ``concat`` along the channels (the
  blocks of its inputs are concatenated; a padded input leaves padding channels inside, which the channel map
  below tracks), and integer ``max_pool2d`` (``layout="NCHW16c"``, ``pool.py``'s blocked kernel);
- a blocked tensor reaching any other op (or the function's result) is converted back to NCHW once
  (``layout_transform`` and, where channels were padded, ``take``/``strided_slice``); a layer whose every use
  needs NCHW keeps NCHW in the first place (the conv kernel unpacks as before), except a pool: it stays
  blocked and its result, a quarter of its input for 2x2 windows, is converted (fmnist_vgg's last conv -> pool
  -> flatten: the conv's NCHW unpacking of 32x14x14 cost more than converting the pooled 32x7x7; whole
  default build 1.05x, load 15).

A blocked tensor carries a channel map (logical channel -> physical channel); a conv reading it scatters its
weights by the map.  Padding channels hold whatever their producer computed from zero weights and padded
constants; they are only ever multiplied by zero weights, pooled or added channel-wise, and dropped at the
conversion back, so every real channel is the integer it was: the pass changes no result (tests compare the
built module with and without it, bit for bit).  Nothing is done without an AVX-512 VNNI target in scope,
or inside ``legalize.disabled()``.  A tuned build keeps the blocked layout: the design space of the VNNI
kernel (``tuning.py``) is that of the blocked kernels too.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import tvm
from tvm import relax, tirx
from tvm.ir.expr import GenericConst

from . import legalize as L
from .common import ceil_div, function_bindings, remap_expr, rewrite_relax_functions
from .conv2d_depthwise import blocked_fits
from .conv2d_int import plan_conv2d
from .epilogue import BINARY, UNARY, _per_channel
from .targets import kernel_config

BLOCK = 16
BLOCKED = L.BLOCKED
POOL_DTYPES = ("int8", "uint8", "int16")


@dataclass
class _Node:
    """What the pass knows of one binding: its kind and, for a blocked result, the channel map."""

    kind: str                       # "conv" | "depthwise" | "elementwise" | "concat" | "pool" | "other"
    blocked: bool = False
    demoted: bool = False           # forced to NCHW (no consumer profits from the blocked result)
    phys: np.ndarray | None = None  # logical channel -> physical channel of the blocked result
    width: int = 0                  # physical channels (a multiple of 16)
    weight: np.ndarray | None = None
    deps: list = field(default_factory=list)    # the tensor vars it reads


def _static(ty) -> list | None:
    if not isinstance(ty, relax.TensorType) or ty.shape is None:
        return None
    dims = []
    for s in list(ty.shape)[1:]:
        if not isinstance(s, tirx.IntImm):
            return None
        dims.append(int(s.value))
    return dims


def _op(value) -> str | None:
    return str(value.op.name) if isinstance(value, relax.Call) and hasattr(value.op, "name") else None


def _vnni_conv(value, lookup, target) -> tuple:
    """``(kind, constant weight)`` of an NCHW integer conv2d on the VNNI kernel (``"conv"``) or the blocked
    depthwise kernel (``"depthwise"``), else ``("other", None)``."""
    a = value.attrs
    if (str(a.data_layout), str(a.kernel_layout), str(a.out_layout)) != ("NCHW", "OIHW", "NCHW"):
        return "other", None
    weight = L.constant_value(value.args[1], lookup)
    if weight is None or weight.dtype != np.int8:
        return "other", None
    plan = L.conv2d_plan_for(value, target, weight)
    if plan is not None and plan.layout == "vnni":
        return "conv", weight
    if plan is not None and plan.layout == "depthwise_vnni" and blocked_fits(plan):
        return "depthwise", weight
    return "other", None


def _elementwise_ok(value, dims) -> bool:
    """Elementwise over one 4-D shape: tensor operands of the result's shape, constants scalar or per channel."""
    if dims is None or len(dims) != 3:
        return False
    for a in value.args:
        if isinstance(a, relax.Var):
            if _static(a.ty) != dims:
                return False
        elif isinstance(a, GenericConst):
            c = a.value.numpy()
            if c.size != 1 and _per_channel(c, [1, *dims], 1) is None:
                return False
        else:
            return False
    return True


def _classify(bindings, target) -> dict:
    bound = {b.var: b.value for b in bindings}
    nodes = {}
    for b in bindings:
        v, dims = b.value, _static(b.var.ty)
        op = _op(v)
        node = _Node("other")
        if op == "relax.nn.conv2d":
            kind, weight = _vnni_conv(v, bound.get, target)
            if weight is not None:
                node = _Node(kind, weight=weight)
        elif (op in BINARY or op in UNARY) and _elementwise_ok(v, dims):
            node = _Node("elementwise")
        elif op == "relax.concat" and dims is not None and len(dims) == 3 and v.attrs.axis is not None \
                and int(v.attrs.axis) == 1 and isinstance(v.args[0], relax.Tuple) \
                and all(isinstance(f, relax.Var) and _static(f.ty) is not None for f in v.args[0].fields):
            node = _Node("concat")
        elif op == "relax.nn.max_pool2d" and (str(v.attrs.layout), str(v.attrs.out_layout)) == ("NCHW", "NCHW") \
                and dims is not None and str(b.var.ty.dtype) in POOL_DTYPES:
            node = _Node("pool")
        fields = v.args[0].fields if op == "relax.concat" and isinstance(v.args[0], relax.Tuple) else \
            getattr(v, "args", [])
        node.deps = [a for a in fields if isinstance(a, relax.Var)]
        nodes[b.var] = node
    return nodes


def _conv_out_blocked(var, value, node, in_width) -> bool:
    """Whether the kernel can write this conv's output blocked (a register block must divide the positions)."""
    dims = _static(value.args[0].ty)
    oc, c, kh, kw = node.weight.shape
    a = value.attrs
    try:
        plan_conv2d([1, in_width or c, dims[1], dims[2]], (ceil_div(oc, BLOCK) * BLOCK, in_width or c, kh, kw),
                    str(value.args[0].ty.dtype), str(a.out_dtype), [int(s) for s in a.strides],
                    [int(p) for p in a.padding], [int(d) for d in a.dilation], 1,
                    config=kernel_config(tvm.target.Target.current(), str(a.out_dtype)),
                    data_layout=BLOCKED if in_width else "NCHW", out_layout=BLOCKED)
    except ValueError:
        return False
    return True


def _decide(bindings, nodes) -> None:
    """Which results are blocked: forward (a conv writes blocked where its kernel can; the ops between convs
    follow their inputs), then results no consumer profits from are demoted to NCHW, until nothing changes."""
    consumers: dict = {}
    for b in bindings:
        for d in nodes[b.var].deps:
            consumers.setdefault(d, []).append(b.var)
    while True:
        for b in bindings:
            node = nodes[b.var]
            node.blocked, node.phys, node.width = False, None, 0
            if node.demoted or node.kind == "other":
                continue
            ins = [nodes[d] for d in node.deps if d in nodes]
            if node.kind == "conv":
                src = nodes.get(b.value.args[0])
                width = src.width if src is not None and src.blocked else 0
                if _conv_out_blocked(b.var, b.value, node, width):
                    oc = node.weight.shape[0]
                    node.blocked, node.phys, node.width = True, np.arange(oc), ceil_div(oc, BLOCK) * BLOCK
                continue
            if node.kind == "depthwise":
                ins = [nodes[d] for d in node.deps[:1] if d in nodes]
                if not ins or not ins[0].blocked:
                    continue
            elif not ins or len(ins) != len(node.deps) or not all(n.blocked for n in ins):
                continue
            if node.kind == "concat":
                offsets = np.cumsum([0] + [n.width for n in ins])
                node.phys = np.concatenate([n.phys + o for n, o in zip(ins, offsets)])
                node.width = int(offsets[-1])
            else:
                if any(not np.array_equal(n.phys, ins[0].phys) or n.width != ins[0].width for n in ins):
                    continue
                node.phys, node.width = ins[0].phys, ins[0].width
            node.blocked = True
        changed = False
        for b in reversed(bindings):
            node = nodes[b.var]
            if not node.blocked or node.kind == "pool":    # a pool converts its (smaller) result instead
                continue
            users = consumers.get(b.var, [])     # the function's result counts as an NCHW use
            if not any(nodes[u].kind == "conv" or nodes[u].blocked for u in users):
                node.demoted = changed = True
        if not changed:
            return


def _blocked_const(c: np.ndarray, dims: list, node: _Node) -> np.ndarray:
    """A scalar stays; a per-channel constant becomes ``(1, W/16, 1, 1, 16)`` by the channel map (0 elsewhere)."""
    if c.size == 1:
        return c
    line = _per_channel(c, [1, *dims], 1)
    full = np.zeros(node.width, c.dtype)
    full[node.phys] = line
    return full.reshape(1, node.width // BLOCK, 1, 1, BLOCK)


def block_function(func: relax.Function, target, bb: relax.BlockBuilder) -> tuple:
    """``(new function, number of blocked results)``."""
    bindings = function_bindings(func)
    body = func.body.body
    nodes = _classify(bindings, target)
    _decide(bindings, nodes)
    count = sum(n.blocked for n in nodes.values())
    if not count:
        return func, 0
    env: dict = {}          # old var -> new expr
    nchw: dict = {}         # old blocked var -> its NCHW conversion

    def as_nchw(var):
        if var not in nchw:
            node, x = nodes[var], env[var]
            c = _static(var.ty)[0]
            t = bb.emit(relax.op.layout_transform(x, index_map=lambda n, cb, h, w, k: (n, cb * BLOCK + k, h, w)),
                        f"{var.name}_nchw")
            if not np.array_equal(node.phys, np.arange(c)):
                t = bb.emit(relax.op.take(t, relax.const(node.phys.astype("int32")), axis=1), f"{var.name}_take")
            elif node.width != c:
                t = bb.emit(relax.op.strided_slice(t, axes=[1], begin=[0], end=[c]), f"{var.name}_slice")
            nchw[var] = t
        return nchw[var]

    def operand(a):         # an input as an op that needs NCHW reads it
        if isinstance(a, relax.Var) and a in nodes and nodes[a].blocked:
            return as_nchw(a)
        return env.get(a, a) if isinstance(a, relax.Var) else a

    attrs = dict(func.attrs) if func.attrs is not None else None
    out = None
    with bb.function("main", list(func.params), attrs=attrs):
        with bb.dataflow():
            for b in bindings:
                node, v = nodes[b.var], b.value
                if node.kind == "conv":
                    src = v.args[0]
                    in_blocked = src in nodes and nodes[src].blocked
                    w = node.weight
                    oc, c, kh, kw = w.shape
                    width = nodes[src].width if in_blocked else c
                    out_c = node.width if node.blocked else oc
                    wp = np.zeros((out_c, width, kh, kw), np.int8)
                    wp[:oc, nodes[src].phys if in_blocked else np.arange(c)] = w
                    a = v.attrs
                    new = relax.op.nn.conv2d(
                        env[src] if in_blocked else operand(src), relax.const(wp), a.strides, a.padding, a.dilation,
                        1, BLOCKED if in_blocked else "NCHW", "OIHW", BLOCKED if node.blocked else "NCHW",
                        str(a.out_dtype))
                    env[b.var] = bb.emit(new, b.var.name)
                    continue
                if node.blocked and node.kind == "depthwise":
                    src, w, a = v.args[0], node.weight, v.attrs
                    wp = np.zeros((node.width, *w.shape[1:]), np.int8)
                    wp[node.phys] = w
                    env[b.var] = bb.emit(relax.op.nn.conv2d(
                        env[src], relax.const(wp), a.strides, a.padding, a.dilation, node.width, BLOCKED, "OIHW",
                        BLOCKED, str(a.out_dtype)), b.var.name)
                    continue
                if node.blocked and node.kind == "elementwise":
                    dims = _static(b.var.ty)
                    args = [env[a] if isinstance(a, relax.Var) else
                            relax.const(_blocked_const(a.value.numpy(), dims, node)) for a in v.args]
                    env[b.var] = bb.emit(relax.Call(v.op, args, v.attrs, v.ty_args), b.var.name)
                    continue
                if node.blocked and node.kind == "concat":
                    env[b.var] = bb.emit(relax.op.concat(relax.Tuple([env[f] for f in v.args[0].fields]), axis=1),
                                         b.var.name)
                    continue
                if node.blocked and node.kind == "pool":
                    a = v.attrs
                    env[b.var] = bb.emit(relax.op.nn.max_pool2d(
                        env[v.args[0]], a.pool_size, a.strides, a.padding, a.dilation, a.ceil_mode,
                        a.count_include_pad, layout=BLOCKED, out_layout=BLOCKED), b.var.name)
                    continue
                if b.var.same_as(body) and not isinstance(b.var, relax.DataflowVar):
                    out = bb.emit_output(remap_expr(v, operand), b.var.name)     # the result, as it was bound
                    continue
                env[b.var] = bb.emit(remap_expr(v, operand), b.var.name)
            if out is None:
                out = bb.emit_output(remap_expr(body, operand))
        bb.emit_func_output(out)
    gv = bb.get().get_global_var("main")
    return bb.get()[gv], count


@tvm.transform.module_pass(opt_level=0, name="tvm_fxp.schedules.BlockLayout")
class BlockLayout:
    """Keep the activations between integer VNNI layers blocked (NCHW16c); see the module doc.

    Needs an LLVM target with AVX-512 VNNI in scope; otherwise, or inside ``legalize.disabled()``, the module
    is returned unchanged.  ``self.blocked`` counts the blocked results of the last run.
    """

    def __init__(self):
        self.blocked = 0

    def transform_module(self, mod: tvm.IRModule, ctx) -> tvm.IRModule:
        target = L._cpu_target()
        self.blocked = 0
        if target is None or not kernel_config(target, "int32").vnni:
            return mod

        def rewrite(gv, func):
            bb = relax.BlockBuilder()
            nf, count = block_function(func, target, bb)
            return nf, count, {}

        new, self.blocked = rewrite_relax_functions(mod, rewrite)
        return new


__all__ = ["BlockLayout", "block_function", "remap_expr"]
