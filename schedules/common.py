"""Helpers the kernels, the legalization and the fusion share: schedule queries and small Relax walks.

The kernels package stands alone (it imports neither ``tvm_fxp.passes`` nor the face), so the few Relax
walks the fusion needs live here, over TVM's own IR classes.
"""

from __future__ import annotations

import contextlib
import threading

from tvm import relax, tirx


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


class ThreadFlag(threading.local):
    """A per-thread flag: false, and true inside ``with flag.set():`` (this thread; a nested block restores the
    outer value).  The switches of this package (``legalize.disabled``, ``graph.per_kernel``,
    ``conv2d_avx2.prefer_madd``) are such flags."""

    value = False

    @contextlib.contextmanager
    def set(self):
        before, self.value = self.value, True
        try:
            yield
        finally:
            self.value = before

    def __bool__(self) -> bool:
        return self.value


class ConvGeometry:
    """The output shape of a conv2d plan: a mixin for the plans' frozen dataclasses, which hold ``height``,
    ``width``, ``kernel``, ``strides``, ``padding`` ``(top, left, bottom, right)`` and ``dilation``."""

    @property
    def out_hw(self) -> tuple:
        (kh, kw), (sh, sw), (dh, dw) = self.kernel, self.strides, self.dilation
        pt, pl, pb, pr = self.padding
        return ((self.height + pt + pb - dh * (kh - 1) - 1) // sh + 1,
                (self.width + pl + pr - dw * (kw - 1) - 1) // sw + 1)

    @property
    def positions(self) -> int:
        oh, ow = self.out_hw
        return oh * ow


class GemmGeometry(ConvGeometry):
    """A conv2d (groups 1) run as a ``positions x reduce x out_channels`` GEMM in ``tile = (R, C)`` register
    blocks: the shapes ``bitserial.BitserialPlan`` and ``paired_int32.PairedPlan`` derive alike from their
    ``channels``, ``out_channels``, ``kernel`` and ``tile``."""

    @property
    def outputs(self) -> int:
        return self.out_channels

    @property
    def reduce(self) -> int:
        kh, kw = self.kernel
        return self.channels * kh * kw

    @property
    def row_blocks(self) -> int:
        return ceil_div(self.positions, self.tile[0])

    @property
    def col_blocks(self) -> int:
        return ceil_div(self.out_channels, self.tile[1])

    @property
    def macs(self) -> int:
        return self.positions * self.out_channels * self.reduce


def shape64(*dims) -> tuple:
    """A buffer shape with int64 dimensions (Python ints as ``int64`` immediates, expressions as they are), as
    ``te.create_prim_func(..., "int64")`` declares the other kernels' buffers: ``FuseTIR`` (``graph.py``) maps a
    tensor to the buffers of its producer and its consumers, whose shapes must agree in type."""
    return tuple(tirx.IntImm("int64", d) if isinstance(d, int) else d for d in dims)


def has_block(sch, name: str) -> bool:
    """Whether the schedule's function has a block called ``name`` (e.g. a fused ``epilogue``)."""
    try:
        sch.get_sblock(name)
        return True
    except Exception:  # noqa: BLE001 -- s_tir raises a ScheduleError subclass when the block is absent
        return False


def function_bindings(func: relax.Function) -> list:
    """All bindings of a function body, in order, across its blocks."""
    return [b for block in func.body.blocks for b in block.bindings]


def _vars_in(e, out: list) -> list:
    if isinstance(e, relax.Var):
        out.append(e)
    elif isinstance(e, relax.Call):
        for a in e.args:
            _vars_in(a, out)
    elif isinstance(e, relax.Tuple):
        for a in e.fields:
            _vars_in(a, out)
    elif isinstance(e, relax.TupleGetItem):
        _vars_in(e.tuple_value, out)
    return out


def use_counts(func: relax.Function) -> dict:
    """How often each var is used (the function's result counts as one use)."""
    counts: dict = {}
    for e in [b.value for b in function_bindings(func)] + [func.body.body]:
        for v in _vars_in(e, []):
            counts[v] = counts.get(v, 0) + 1
    return counts


def output_vars(func: relax.Function) -> set:
    """The vars the function returns (its result, or the fields of a result tuple)."""
    body = func.body.body
    fields = body.fields if isinstance(body, relax.Tuple) else [body]
    return {f for f in fields if isinstance(f, relax.Var)}


def remap_expr(expr, env):
    """Rebuild ``expr`` with vars replaced through ``env``: a dict (var -> new expr; vars not in it kept) or a
    function (var -> new expr, called for every var in order); other leaves are kept."""
    if isinstance(expr, relax.Var):
        return env(expr) if callable(env) else env.get(expr, expr)
    if isinstance(expr, relax.Call):
        return relax.Call(expr.op, [remap_expr(a, env) for a in expr.args], expr.attrs, expr.ty_args)
    if isinstance(expr, relax.Tuple):
        return relax.Tuple([remap_expr(a, env) for a in expr.fields])
    if isinstance(expr, relax.TupleGetItem):
        return relax.TupleGetItem(remap_expr(expr.tuple_value, env), expr.index)
    return expr


def reemit_function(func: relax.Function, bb: relax.BlockBuilder, emit_binding) -> relax.Function:
    """``func`` emitted again through ``bb`` (as its ``main``, same parameters and attributes, one dataflow
    block), binding by binding: ``emit_binding(k, binding, env)`` emits what replaces the ``k``-th binding
    (mapping the vars it replaces to their new values in ``env``) and returns True, or returns False to keep the
    binding (its value's vars remapped through ``env``).  The result is remapped likewise.  The rebuild loop
    of our rewriting passes (``SinkIntoConcat``, ``FuseEpilogue``, ``FuseKTiles``)."""
    env: dict = {}
    attrs = dict(func.attrs) if func.attrs is not None else None
    with bb.function("main", list(func.params), attrs=attrs):
        with bb.dataflow():
            for k, b in enumerate(function_bindings(func)):
                if not emit_binding(k, b, env):
                    env[b.var] = bb.emit(remap_expr(b.value, env), b.var.name)
            out = bb.emit_output(remap_expr(func.body.body, env))
        bb.emit_func_output(out)
    return bb.get()[bb.get().get_global_var("main")]


def rewrite_relax_functions(mod, rewrite) -> tuple:
    """The module with ``rewrite(gv, func) -> (new_func, count, extra)`` applied to each of its Relax functions
    (those with a ``SeqExpr`` body; other functions are kept), and the sum of the counts.  A function is
    replaced (keeping its attributes) only when its count is non-zero; ``extra`` maps the GlobalVars of new
    functions it needs (e.g. fused kernels) to those functions.  The shared driver of our module passes."""
    import tvm

    new = tvm.IRModule(attrs=mod.attrs) if mod.attrs is not None else tvm.IRModule()
    total = 0
    for gv, func in mod.functions.items():
        if isinstance(func, relax.Function) and isinstance(func.body, relax.SeqExpr):
            nf, count, extra = rewrite(gv, func)
            if count:
                total += count
                for kgv, kf in extra.items():
                    new[kgv] = kf
                func = nf.with_attrs(func.attrs) if func.attrs is not None else nf
        new[gv] = func
    return new, total


def tile_unpack(sch, lanes: int, block: str = "conv_unpack", tile: int = 16) -> None:
    """Schedule a kernel's unpacking from ``(..., positions, lanes)`` blocks to NCHW (a transpose) by tiles of
    ``lanes`` channels x ``tile`` positions, so that both sides of each tile stay in L1 (TVM's default order
    walks every position once per channel: measured 2.2x slower at 256x56x56).  Only the loop order
    changes."""
    if not has_block(sch, block):
        return
    blk = sch.get_sblock(block)
    loops = sch.get_loops(blk)
    if len(loops) != 4:
        return
    b, o, y, x = loops
    ob, v = sch.split(o, [None, lanes])
    po, pi = sch.split(sch.fuse(y, x), [None, tile])
    sch.reorder(b, ob, po, v, pi)
    sch.unroll(v)
