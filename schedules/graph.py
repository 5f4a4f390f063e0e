"""``FuseGraph``: a small model's chain of kernel calls -> one PrimFunc (one kernel call per inference).

After legalization (and ``FuseTIR``, ``ScheduleElementwise``) a model's ``main`` is a chain of ``call_tir``
calls of scheduled kernels.  The Relax VM runs each with builtins around it (``make_shape``,
``alloc_storage``, ``alloc_tensor``, ``null_value``, ``match_shape``, ...), and each kernel checks its
arguments on entry: for the 28x28 reference models (16 kernels, ~110 VM instructions) that is ~20% of a
batch-1 call (fmnist_resnet, measured: 180 us -> 143 us per call on a loaded machine; ``bench/latency.py``
has the quiet numbers).  This pass groups each run of ``call_tir`` bindings of a dataflow block into one
primitive Relax function and lets TVM's own ``FuseTIR`` merge the kernels' bodies into one PrimFunc: the
intermediates become buffers allocated inside it, every kernel keeps its own loops and schedule, so the
same integers are computed in the same order; only the VM's work between the kernels goes.

Only functions whose kernel outputs total at most ``max_bytes`` at batch 1 and that make at most
``MAX_KERNELS`` calls are fused (the reference models: ~0.1 MB, 15 to 20 calls; the 224x224 networks, tens
of MB, whose kernels dwarf the VM's work, and the robustness tests' graphs of hundreds of small cases are left
as they are: one giant function would only cost compile time).  Inside ``per_kernel()`` (this thread) nothing is fused: a
build whose kernel calls ``runtime.profile`` can time one by one.  When ``FuseTIR`` cannot merge a run
(e.g. two kernels declare the same tensor with different index types), the module is left unfused with a
warning: the build is still correct, only slower.
"""

from __future__ import annotations

import re
import warnings

import numpy as np
import tvm
from tvm import relax, tirx
from tvm.ir.expr import GenericConst

from .common import ThreadFlag

MAX_BYTES = 1 << 20
MAX_KERNELS = 64        # calls per function (the reference models: 15 to 20); more would only cost compile time
_off = ThreadFlag()


def per_kernel():
    """Within this block (this thread), ``FuseGraph`` leaves every kernel call on its own (for profiling)."""
    return _off.set()


def _call_tir(value) -> bool:
    """A plain ``call_tir`` (no symbolic-var arguments) of a PrimFunc."""
    return isinstance(value, relax.Call) and isinstance(value.op, tvm.ir.Op) and \
        value.op.name == "relax.call_tir" and len(value.args) == 2


def _bytes(ty) -> int | None:
    """Bytes of a tensor type at batch 1 (a symbolic leading dimension counts as 1), None when unknown."""
    if not isinstance(ty, relax.TensorType) or ty.shape is None or not hasattr(ty.shape, "values"):
        return None
    n = 1
    for i, d in enumerate(ty.shape.values):
        if isinstance(d, tirx.IntImm):
            n *= int(d.value)
        elif i > 0:
            return None
    return n * (np.dtype(str(ty.dtype)).itemsize if str(ty.dtype) != "bool" else 1)


def _free_vars(expr, out: list, consts: bool = False) -> list:
    """The vars (and with ``consts``, the tensor constants) ``expr`` uses, in order."""
    if isinstance(expr, relax.Var) or (consts and isinstance(expr, GenericConst)):
        out.append(expr)
    elif isinstance(expr, relax.Call):
        for a in expr.args:
            _free_vars(a, out, consts)
    elif isinstance(expr, relax.Tuple):
        for a in expr.fields:
            _free_vars(a, out, consts)
    elif isinstance(expr, relax.TupleGetItem):
        _free_vars(expr.tuple_value, out, consts)
    return out


def _small(func: relax.Function, max_bytes: int) -> bool:
    """Whether ``func`` makes at most ``MAX_KERNELS`` kernel calls, every kernel output has a known size and
    they total at most ``max_bytes``."""
    total, calls = 0, 0
    for block in func.body.blocks:
        for b in block.bindings:
            if _call_tir(b.value):
                size = _bytes(b.var.ty)
                if size is None:
                    return False
                total, calls = total + size, calls + 1
    return total <= max_bytes and calls <= MAX_KERNELS


def _int64_dims(func) -> bool:
    """Whether every buffer parameter of a PrimFunc has int64 dims (ours and TVM's legalized ops do; a few
    TVM kernels declare int32 dims, and FuseTIR cannot map one tensor to buffers whose dims differ in type)."""
    if not isinstance(func, tirx.PrimFunc):
        return False
    # 0.27's Python PrimFunc has no buffer_map: read the signature as TVMScript prints it (int64 constants as
    # T.int64(k), int32 ones bare)
    signature = next((line for line in func.script().splitlines() if line.startswith("def ")), "")
    shapes = re.findall(r'T\.Buffer\(\((.*?)\), "', signature)
    return all(re.fullmatch(r"\s*(T\.int64\(\d+\)|[A-Za-z_]\w*)\s*", d) for shape in shapes
               for d in shape.split(",") if d.strip())


def _runs(bindings: list, mod=None) -> list:
    """Maximal runs ``[start, stop)`` of at least two call_tir bindings (of PrimFuncs of ``mod`` with int64
    dims, when given)."""
    def fusible(value):
        return _call_tir(value) and (mod is None or _int64_dims(mod[value.args[0]]))

    runs, start = [], None
    for k, b in enumerate(bindings + [None]):
        if b is not None and fusible(b.value):
            start = k if start is None else start
            continue
        if start is not None and k - start >= 2:
            runs.append((start, k))
        start = None
    return runs


def _group(bindings: list, start: int, stop: int, later: set, name: str) -> tuple:
    """``(primitive function of bindings[start:stop], its arguments, the vars of the run used later)``.
    Its parameters are the vars defined before the run and the tensor constants (``FuseTIR`` takes no
    constants inside a primitive function)."""
    run = bindings[start:stop]
    defined = {b.var for b in run}
    free: list = []
    for b in run:
        for v in _free_vars(b.value, [], consts=True):
            if v not in defined and not any(v.same_as(f) for f in free):
                free.append(v)
    outs = [b.var for b in run if b.var in later]
    params = [relax.Var(v.name if isinstance(v, relax.Var) else f"c{i}", v.ty) for i, v in enumerate(free)]
    env = {v: p for v, p in zip(free, params) if isinstance(v, relax.Var)}
    consts = [(v, p) for v, p in zip(free, params) if not isinstance(v, relax.Var)]
    bb = relax.BlockBuilder()
    with bb.function(name, params, attrs={"Primitive": True}):
        with bb.dataflow():
            for b in run:
                value = _remap(b.value, env, consts)
                emit = bb.emit_output if b.var in later else bb.emit
                env[b.var] = emit(value, b.var.name)
            result = env[outs[0]] if len(outs) == 1 else bb.emit_output(relax.Tuple([env[v] for v in outs]))
        bb.emit_func_output(result)
    mod = bb.get()
    return mod[mod.get_global_var(name)], free, outs


def _remap(expr, env: dict, consts: list):
    if isinstance(expr, relax.Var):
        return env.get(expr, expr)
    if isinstance(expr, GenericConst):
        return next((p for c, p in consts if c.same_as(expr)), expr)
    if isinstance(expr, relax.Call):
        return relax.Call(expr.op, [_remap(a, env, consts) for a in expr.args], expr.attrs, expr.ty_args)
    if isinstance(expr, relax.Tuple):
        return relax.Tuple([_remap(a, env, consts) for a in expr.fields])
    if isinstance(expr, relax.TupleGetItem):
        return relax.TupleGetItem(_remap(expr.tuple_value, env, consts), expr.index)
    return expr


def _used(exprs) -> set:
    out: set = set()
    for e in exprs:
        out.update(_free_vars(e, []))
    return out


def group_function(func: relax.Function, name: str, mb: relax.BlockBuilder) -> tuple:
    """``(new function, number of groups)``: each run of kernel calls of each dataflow block replaced by one
    call of a primitive function (added to ``mb``'s module)."""
    blocks = list(func.body.blocks)
    groups = 0
    new_blocks = []
    for bi, block in enumerate(blocks):
        bindings = list(block.bindings)
        runs = _runs(bindings, mb.get()) if isinstance(block, relax.DataflowBlock) else []
        if not runs:
            new_blocks.append(block)
            continue
        rest = [b.value for later in blocks[bi + 1:] for b in later.bindings] + [func.body.body]
        out_bindings, k = [], 0
        for start, stop in runs:
            out_bindings += bindings[k:start]
            gname = f"{name}_graph{groups}"
            prim, args, outs = _group(bindings, start, stop, _used([b.value for b in bindings[stop:]] + rest),
                                      gname)
            gv = mb.add_func(prim, gname)
            groups += 1
            if len(outs) == 1:
                out_bindings.append(relax.VarBinding(outs[0], relax.Call(gv, args)))
            else:
                tup = relax.DataflowVar(f"{gname}_out", prim.ret_ty)
                out_bindings.append(relax.VarBinding(tup, relax.Call(gv, args)))
                out_bindings += [relax.VarBinding(v, relax.TupleGetItem(tup, i)) for i, v in enumerate(outs)]
            k = stop
        out_bindings += bindings[k:]
        new_blocks.append(relax.DataflowBlock(out_bindings))
    if not groups:
        return func, 0
    body = relax.SeqExpr(new_blocks, func.body.body)
    return relax.Function(func.params, body, func.ret_ty, func.is_pure, func.attrs), groups


def FuseGraph(max_bytes: int | None = None) -> tvm.transform.Pass:  # noqa: N802 -- a pass, named like TVM's
    """The pass (see the module doc); run after ``FuseTIR`` and ``ScheduleElementwise``.  ``max_bytes``:
    default ``MAX_BYTES``."""

    @tvm.transform.module_pass(opt_level=0, name="tvm_fxp.schedules.FuseGraph")
    def _pass(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        if _off:
            return mod
        mb = relax.BlockBuilder(mod)
        fused = []
        for gv, func in list(mod.functions.items()):
            if not isinstance(func, relax.Function) or not isinstance(func.body, relax.SeqExpr) or \
                    (func.attrs is not None and "Primitive" in func.attrs) or \
                    not _small(func, MAX_BYTES if max_bytes is None else max_bytes):
                continue
            nf, groups = group_function(func, gv.name_hint, mb)
            if groups:
                fused.append(gv.name_hint)
                mb.update_func(gv, nf)
        if not fused:
            return mod
        try:
            return relax.transform.FuseTIR()(relax.transform.Normalize()(mb.get()))
        except (ValueError, TypeError, RuntimeError) as e:    # TVM's errors (InternalError is a RuntimeError)
            warnings.warn(f"tvm_fxp: the kernels of {', '.join(fused)} stay separate calls (FuseTIR: "
                          f"{str(e).strip().splitlines()[-1][:200]})", stacklevel=2)
            return mod

    return _pass
