"""Relax legalization of integer conv2d/matmul to the scheduled kernels of this package.

``legalize_map()`` is the ``customize_legalize_map`` of ``relax.transform.LegalizeOps`` that the build
pipeline (``tvm_fxp.schedules.pipeline(target)``) runs; ``register()`` instead installs it as the
``FLegalize`` attribute of ``relax.nn.conv2d`` and ``relax.matmul`` (at a higher registration level than
TVM's own), for users who call ``tvm.compile`` with its default pipeline.  Importing this module changes no
global TVM state.  The legalization, when

- the data is int8/uint8, the weight int8 and ``out_dtype`` int16/int32,
- the layouts are NCHW/OIHW/NCHW (conv2d) or the operands ``(M, K) @ (K, N)`` (matmul),
- every dimension but the batch is static, and
- the target in scope (``tvm.compile`` enters it around ``LegalizeOps``) is an LLVM CPU target,

packs the weights (and, for uint8 data into int16, computes a per-channel offset) with the kernel's
packing PrimFunc -- on the host at compile time when the weight is a constant, since ``tvm.compile``'s
default CPU pipeline has no ``FoldConstant``, else as a ``call_tir`` -- and emits ``call_tir`` of the
scheduled kernel, marked ``op_pattern = kOpaque`` so that ``FuseOps``/``FuseTIR`` keep its schedule.
Anything else goes to TVM's original legalization, called unchanged.  ``relax.nn.max_pool2d`` of NCHW
integer data on x86 goes to ``pool.py``'s vectorized kernel the same way (opaque ``call_tir``).

Where it runs: inside ``relax.transform.LegalizeOps``; it assumes nothing of the graph beyond the op and its
operand types.  An int16 result is exact when it fits in int16, which the producer of the graph
(``tvm_fxp.passes.Realize(accumulator="narrow")``) proves before asking for it; ``disabled()`` turns our
kernels off for a block of code (e.g. to build a baseline).
"""

from __future__ import annotations

import contextlib
import threading

import numpy as np
import tvm
import tvm_ffi
from tvm import relax, tirx
from tvm.ir.expr import GenericConst

from . import paired_int32 as paired
from .conv2d_int import ACC_DTYPES, INPUT_DTYPES, WEIGHT_DTYPES, conv2d_primfuncs, exact_float, plan_conv2d
from .dense_int import dense_primfuncs, plan_dense
from .targets import kernel_config

BLOCKED = "NCHW16c"            # the blocked activation layout of the VNNI kernels (layout.py)
_ATTR = "FLegalize"
_LEVEL = 20                     # TVM registers its legalizations at the default level 10
OP_PATTERN_OPAQUE = 8           # tvm::relax::OpPatternKind::kOpaque
KERNEL_ATTR = "tvm_fxp.kernel"  # PrimFunc attribute naming the kernel (for tests and reports)

_switch = threading.local()


@contextlib.contextmanager
def disabled():
    """Within this block (this thread), conv2d/matmul get TVM's own legalization, e.g. for a baseline."""
    before = getattr(_switch, "off", False)
    _switch.off = True
    try:
        yield
    finally:
        _switch.off = before


def original_legalize(op_name: str):
    """TVM's own legalization of ``op_name`` (as it was before ``register()``, if that was called)."""
    saved = tvm_ffi.get_global_func(_saved_key(op_name), allow_missing=True)
    return saved if saved is not None else tvm.ir.Op.get(op_name).get_attr(_ATTR)


def _saved_key(op_name: str) -> str:
    return f"tvm_fxp.schedules.original_legalize.{op_name}"


def _static_dims(shape) -> list | None:
    out = []
    for s in shape:
        if not isinstance(s, tirx.IntImm):
            return None
        out.append(int(s.value))
    return out


def _tensor_type(expr):
    ty = expr.ty
    if not isinstance(ty, relax.TensorType) or ty.shape is None:
        return None
    return ty


def _cpu_target():
    if getattr(_switch, "off", False):
        return None
    target = tvm.target.Target.current(allow_none=True)
    if target is None or target.kind.name != "llvm":
        return None
    return target


def _add_kernel(bb, func: tirx.PrimFunc, name: str, kernel: str, opaque: bool):
    attrs = {KERNEL_ATTR: kernel}
    if opaque:
        attrs["op_pattern"] = OP_PATTERN_OPAQUE
    func = func.without_attr("global_symbol").with_attrs(attrs)
    return bb.add_func(func, name)


def _ours(data_dtype: str, weight_dtype: str, out_dtype: str) -> bool:
    """Integer operands into an int16/int32 accumulator, or the simulation's exact float64 arithmetic."""
    return exact_float(data_dtype, weight_dtype, out_dtype) or (
        data_dtype in INPUT_DTYPES and weight_dtype in WEIGHT_DTYPES and out_dtype in ACC_DTYPES)


def _paired(make, weight, data_dtype: str, weight_dtype: str, out_dtype: str, target):
    """The paired-int32 plan (``paired_int32``: gemmlowp/ruy ``smull``/``smlal2 .8h`` + ``sadalp .4s``) for an
    int32-accumulating int8 layer on an aarch64 target, when the constant ``weight`` proves that no int16 pair
    sum can wrap (``paired_int32.pair_sums_fit_int16``) and the layer is one it runs faster than the widening
    ``smlal .4s`` kernel (``paired_int32.preferred``); else None (the caller keeps ``conv2d_int``/``dense_int``)."""
    if out_dtype != "int32" or weight is None or weight_dtype != "int8" or data_dtype not in INPUT_DTYPES:
        return None
    if kernel_config(target, "int32").arch != "aarch64":
        return None
    try:
        plan = make()
    except ValueError:
        return None
    if not paired.preferred(plan) or not paired.pair_sums_fit_int16(weight, plan):
        return None
    return plan


def conv2d_plan_for(call, target, weight: np.ndarray | None = None):
    """The plan this call would use on ``target`` (``Conv2dPlan``, or ``PairedPlan`` for a proven int32 layer on
    aarch64 -- which needs the constant ``weight``), or None when it is not ours."""
    attrs = call.attrs
    out_dtype = str(attrs.out_dtype)
    if out_dtype not in ACC_DTYPES + ("float64",):
        return None
    layouts = (str(attrs.data_layout), str(attrs.kernel_layout), str(attrs.out_layout))
    if layouts[1] != "OIHW" or {layouts[0], layouts[2]} - {"NCHW", BLOCKED}:
        return None
    data_ty, weight_ty = _tensor_type(call.args[0]), _tensor_type(call.args[1])
    rank = 5 if layouts[0] == BLOCKED else 4
    if data_ty is None or weight_ty is None or len(data_ty.shape) != rank or len(weight_ty.shape) != 4:
        return None
    if not _ours(str(data_ty.dtype), str(weight_ty.dtype), out_dtype):
        return None
    dims = _static_dims(list(data_ty.shape)[1:])
    wdims = _static_dims(list(weight_ty.shape))
    if dims is None or wdims is None:
        return None
    if rank == 5:                     # (N, C/16, H, W, 16): the kernel sees C channels
        dims = [dims[0] * dims[3], dims[1], dims[2]]
    if layouts != ("NCHW", "OIHW", "NCHW"):
        try:
            return plan_conv2d([data_ty.shape[0], *dims], wdims, str(data_ty.dtype), out_dtype,
                               [int(s) for s in attrs.strides], [int(p) for p in attrs.padding],
                               [int(d) for d in attrs.dilation], int(attrs.groups),
                               config=kernel_config(target, out_dtype), weight_dtype=str(weight_ty.dtype),
                               data_layout=layouts[0], out_layout=layouts[2])
        except ValueError:
            return None
    if int(attrs.groups) == 1:
        found = _paired(lambda: paired.plan_paired_conv2d(
            [data_ty.shape[0], *dims], wdims, str(data_ty.dtype), [int(s) for s in attrs.strides],
            [int(p) for p in attrs.padding], [int(d) for d in attrs.dilation]),
            weight, str(data_ty.dtype), str(weight_ty.dtype), out_dtype, target)
        if found is not None:
            return found
    try:
        return plan_conv2d([data_ty.shape[0], *dims], wdims, str(data_ty.dtype), out_dtype,
                           [int(s) for s in attrs.strides], [int(p) for p in attrs.padding],
                           [int(d) for d in attrs.dilation], int(attrs.groups),
                           config=kernel_config(target, out_dtype), weight_dtype=str(weight_ty.dtype))
    except ValueError:
        return None


def dense_plan_for(call, target, weight: np.ndarray | None = None):
    """The plan this matmul would use on ``target`` (``DensePlan``, or ``PairedPlan`` as in
    ``conv2d_plan_for``), or None when it is not ours."""
    out_dtype = str(call.attrs.out_dtype)
    a_ty, b_ty = _tensor_type(call.args[0]), _tensor_type(call.args[1])
    if a_ty is None or b_ty is None or len(a_ty.shape) != 2 or len(b_ty.shape) != 2:
        return None
    if not _ours(str(a_ty.dtype), str(b_ty.dtype), out_dtype):
        return None
    k = _static_dims([a_ty.shape[1]])
    kn = _static_dims(list(b_ty.shape))
    if k is None or kn is None or k[0] != kn[0]:
        return None
    found = _paired(lambda: paired.plan_paired_dense([a_ty.shape[0], k[0]], kn, str(a_ty.dtype)), weight,
                    str(a_ty.dtype), str(b_ty.dtype), out_dtype, target)
    if found is not None:
        return found
    try:
        return plan_dense([a_ty.shape[0], k[0]], kn, str(a_ty.dtype), out_dtype,
                          config=kernel_config(target, out_dtype), weight_dtype=str(b_ty.dtype))
    except ValueError:
        return None


def _run_on_host(func: tirx.PrimFunc, weight: np.ndarray, out_shape, out_dtype: str) -> np.ndarray:
    lib = tvm.tirx.build(func, target=tvm.target.Target("llvm"))
    out = tvm.runtime.empty(tuple(out_shape), out_dtype, tvm.cpu())
    lib(tvm.runtime.tensor(weight), out)
    return out.numpy()


def constant_value(expr, lookup) -> np.ndarray | None:
    """The value of a constant operand, inline or bound to a variable earlier in the function (``lookup``: var
    -> bound value or None, e.g. ``BlockBuilder.lookup_binding``)."""
    seen = 0
    while isinstance(expr, relax.Var) and seen < 16:
        bound = lookup(expr)
        if bound is None:
            return None
        expr, seen = bound, seen + 1
    if isinstance(expr, GenericConst) and isinstance(expr.value, tvm.runtime.Tensor):
        return expr.value.numpy()
    return None


def _weight_input(bb, func, weight, out_shape, out_dtype: str, name: str, kind: str):
    """The packed weight (or offset): a constant computed now when the weight is a constant, else a call.

    ``tvm.compile``'s default CPU pipeline has no ``FoldConstant``, so constant weights are packed here, on
    the host, by the same PrimFunc that would otherwise run at every inference.
    """
    value = constant_value(weight, bb.lookup_binding)
    if value is not None:
        return relax.const(_run_on_host(func, value, out_shape, out_dtype), out_dtype)
    gv = _add_kernel(bb, func, f"fxp_{name}", name, opaque=False)
    return bb.emit(relax.call_tir(gv, [weight], relax.TensorType(tuple(out_shape), out_dtype)))


def emit_kernel(bb, call, plan, funcs, kind: str, epilogue=None, out_ty=None, suffix: str = "", tensors=()):
    """Packed weight (and offset) inputs, then the opaque kernel call; with an ``epilogue``
    (``epilogue.Epilogue``, see ``fuse.py``) its constants follow as kernel arguments, the call's type is
    ``out_ty`` and the kernel's name ends in ``suffix``."""
    pack_func, offset_func, kernel_func = funcs
    layout = getattr(plan, "layout", None)
    tag = f"{kind}_{plan.data_dtype}_{plan.acc_dtype}" + (f"_{layout}" if kind == "conv2d" or layout else "") + \
        ("_w16" if plan.weight_dtype == "int16" else "") + \
        ("_blocked" if BLOCKED in (getattr(plan, "data_layout", ""), getattr(plan, "out_layout", "")) else "")
    weight = call.args[1]
    args = [call.args[0], _weight_input(bb, pack_func, weight, plan.packed_weight_shape, plan.weight_dtype,
                                        f"{kind}_weight_pack", kind)]
    if offset_func is not None:
        out_len = plan.out_channels if kind == "conv2d" else plan.outputs
        args.append(_weight_input(bb, offset_func, weight, (out_len,), plan.offset_dtype, f"{kind}_weight_offset",
                                  kind))
    if epilogue is None:
        kernel_gv = _add_kernel(bb, kernel_func, f"fxp_{tag}", tag, opaque=True)
        return relax.call_tir(kernel_gv, args, call.ty)
    args += [relax.const(c, str(c.dtype)) for c in epilogue.consts] + list(tensors)
    kernel_gv = _add_kernel(bb, kernel_func, f"fxp_{tag}_epilogue{suffix}", f"{tag}+epilogue", opaque=True)
    return relax.call_tir(kernel_gv, args, out_ty)


def _legalize_conv2d(bb, call):
    target = _cpu_target()
    plan = conv2d_plan_for(call, target, constant_value(call.args[1], bb.lookup_binding)) \
        if target is not None else None
    if plan is None:
        return original_legalize("relax.nn.conv2d")(bb, call)
    return emit_kernel(bb, call, plan, conv2d_primfuncs(plan), "conv2d")


def _legalize_matmul(bb, call):
    target = _cpu_target()
    plan = dense_plan_for(call, target, constant_value(call.args[1], bb.lookup_binding)) \
        if target is not None else None
    if plan is None:
        return original_legalize("relax.matmul")(bb, call)
    return emit_kernel(bb, call, plan, dense_primfuncs(plan), "dense")


def dispatched_kernels(mod: tvm.IRModule, target) -> dict:
    """``{kernel tag: number of calls}`` after ``LegalizeOps`` of ``mod`` under ``target``."""
    with tvm.target.Target(target):
        legal = relax.transform.LegalizeOps(customize_legalize_map=legalize_map())(mod)
    tags = {gv: str(f.attrs[KERNEL_ATTR]) for gv, f in legal.functions.items()
            if isinstance(f, tirx.PrimFunc) and f.attrs is not None and KERNEL_ATTR in f.attrs}
    counts: dict = {}
    call_tir = tvm.ir.Op.get("relax.call_tir")
    for func in legal.functions.values():
        if not isinstance(func, relax.Function) or not isinstance(func.body, relax.SeqExpr):
            continue
        for block in func.body.blocks:
            for binding in block.bindings:
                value = binding.value
                if isinstance(value, relax.Call) and value.op.same_as(call_tir) and value.args[0] in tags:
                    tag = tags[value.args[0]]
                    counts[tag] = counts.get(tag, 0) + 1
    return counts


def max_pool2d_plan_for(call, target):
    """The ``pool.PoolPlan`` of an integer NCHW ``relax.nn.max_pool2d`` on an x86 ``target``, else None."""
    from .pool import plan_max_pool2d

    attrs = call.attrs
    layouts = (str(attrs.layout), str(attrs.out_layout))
    if layouts not in (("NCHW", "NCHW"), (BLOCKED, BLOCKED)):
        return None
    data_ty, out_ty = _tensor_type(call.args[0]), call.ty
    if data_ty is None or not isinstance(out_ty, relax.TensorType) or out_ty.shape is None or \
            len(data_ty.shape) != (5 if layouts[0] == BLOCKED else 4):
        return None
    dims, out_dims = _static_dims(list(data_ty.shape)[1:4]), _static_dims(list(out_ty.shape)[2:4])
    if dims is None or out_dims is None:
        return None
    try:
        return plan_max_pool2d([1, *dims], out_dims, str(data_ty.dtype), [int(k) for k in attrs.pool_size],
                               [int(s) for s in attrs.strides], [int(p) for p in attrs.padding],
                               [int(d) for d in attrs.dilation], kernel_config(target, "int32").arch)
    except ValueError:
        return None


def _legalize_max_pool2d(bb, call):
    from .pool import max_pool2d_blocked_primfunc, max_pool2d_primfunc

    target = _cpu_target()
    plan = max_pool2d_plan_for(call, target) if target is not None else None
    if plan is None:
        return original_legalize("relax.nn.max_pool2d")(bb, call)
    lead = list(call.args[0].ty.shape)[0]
    batch = lead.value if isinstance(lead, tirx.IntImm) else tirx.Var("n", "int64")
    blocked = str(call.attrs.layout) == BLOCKED
    tag = f"max_pool2d_{plan.data_dtype}" + ("_blocked" if blocked else "")
    make = max_pool2d_blocked_primfunc if blocked else max_pool2d_primfunc
    gv = _add_kernel(bb, make(plan, batch), f"fxp_{tag}", tag, opaque=True)
    return relax.call_tir(gv, [call.args[0]], call.ty)


_LEGALIZERS = {"relax.nn.conv2d": _legalize_conv2d, "relax.matmul": _legalize_matmul,
               "relax.nn.max_pool2d": _legalize_max_pool2d}


def legalize_map() -> dict:
    """``{op name: legalization}`` for ``relax.transform.LegalizeOps(customize_legalize_map=...)``."""
    return dict(_LEGALIZERS)


def register() -> None:
    """Install the legalization as the ``FLegalize`` of conv2d/matmul, for ``tvm.compile``'s default pipeline
    (explicit: nothing is installed on import).  Once per process, also across a reload of this module: TVM's
    originals are kept in the FFI global registry (``original_legalize``); an op attribute cannot be
    registered twice at one level."""
    for name, fn in _LEGALIZERS.items():
        if tvm_ffi.get_global_func(_saved_key(name), allow_missing=True) is None:
            tvm_ffi.register_global_func(_saved_key(name), tvm.ir.Op.get(name).get_attr(_ATTR))
            tvm.ir.register_op_attr(name, _ATTR, fn, level=_LEVEL)
