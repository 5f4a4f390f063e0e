"""``SeparateHostFuncs``: compile the VM's shape functions apart from the kernels.

With a symbolic batch, ``VMShapeLower`` adds small host PrimFuncs (``shape_func``, ``compute_symbolic_expr``:
``tirx.is_host_func``) to the module.  Compiled in the same LLVM module as our kernels they make TVM's CPU
codegen emit the kernels differently (no separate ``*_compute_`` function with ``noalias`` arguments), and
the kernels run ~1.5x slower (measured: fmnist_vgg conv 16->16 at 28x28, 38 us vs 25 us; the whole model
83 us vs 53 us at batch 1).  This pass, run last in the Relax pipeline, builds those host functions into their
own runtime module (linked into the executable through the ``external_mods`` module attribute) and calls
them by name (``ExternFunc``), so the kernels' module is the same as for static shapes.  Nothing computed
changes.
"""

from __future__ import annotations

import tvm
from tvm import relax, tirx

HOST_ATTR = "tirx.is_host_func"


def _rewrite(expr, names: dict):
    if isinstance(expr, relax.Call):
        args = [_rewrite(a, names) for a in expr.args]
        if isinstance(expr.op, relax.GlobalVar) and expr.op in names:
            return relax.Call(relax.ExternFunc(names[expr.op]), args, None, [expr.ty])
        return relax.Call(expr.op, args, expr.attrs, expr.ty_args)
    if isinstance(expr, relax.Tuple):
        return relax.Tuple([_rewrite(a, names) for a in expr.fields])
    if isinstance(expr, relax.TupleGetItem):
        return relax.TupleGetItem(_rewrite(expr.tuple_value, names), expr.index)
    if isinstance(expr, relax.SeqExpr):
        blocks = []
        for block in expr.blocks:
            bindings = []
            for b in block.bindings:
                if isinstance(b, relax.MatchCast):
                    bindings.append(relax.MatchCast(b.var, _rewrite(b.value, names), b.ty))
                else:
                    bindings.append(relax.VarBinding(b.var, _rewrite(b.value, names)))
            blocks.append(type(block)(bindings))
        return relax.SeqExpr(blocks, _rewrite(expr.body, names))
    if isinstance(expr, relax.If):
        return relax.If(expr.cond, _rewrite(expr.true_branch, names), _rewrite(expr.false_branch, names))
    return expr


def separate_host_funcs(target) -> tvm.transform.Pass:
    @tvm.transform.module_pass(opt_level=0, name="tvm_fxp.schedules.SeparateHostFuncs")
    def _pass(mod: tvm.IRModule, ctx) -> tvm.IRModule:
        host = {gv: f for gv, f in mod.functions.items()
                if isinstance(f, tirx.PrimFunc) and f.attrs is not None and HOST_ATTR in f.attrs}
        if not host:
            return mod
        names = {gv: str(f.attrs.get("global_symbol", gv.name_hint)) for gv, f in host.items()}
        lib = tvm.tirx.build(tvm.IRModule({gv: f for gv, f in host.items()}), target=target)
        out = tvm.IRModule({}, attrs=mod.attrs)
        for gv, f in mod.functions.items():
            if gv in host:
                continue
            if isinstance(f, relax.Function):
                f = relax.Function(f.params, _rewrite(f.body, names), f.ret_ty, f.is_pure, f.attrs)
            out[gv] = f
        ext = list(mod.attrs["external_mods"]) if mod.attrs is not None and "external_mods" in mod.attrs else []
        return out.with_attr("external_mods", ext + [lib])

    return _pass
