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


import numpy as np
import tvm
import tvm_ffi
from tvm import relax, tirx
from tvm.ir.expr import GenericConst

from . import bitserial as bs
from . import paired_int32 as paired
from .common import ThreadFlag
from .conv2d_int import ACC_DTYPES, INPUT_DTYPES, WEIGHT_DTYPES, conv2d_primfuncs, exact_float, plan_conv2d
from .dense_int import dense_primfuncs, plan_dense
from .targets import kernel_config

BLOCKED = "NCHW16c"            # the blocked activation layout of the VNNI kernels (layout.py)
_ATTR = "FLegalize"
_LEVEL = 20                     # TVM registers its legalizations at the default level 10
OP_PATTERN_OPAQUE = 8           # tvm::relax::OpPatternKind::kOpaque
KERNEL_ATTR = "tvm_fxp.kernel"  # PrimFunc attribute naming the kernel (for tests and reports)

_off = ThreadFlag()


def disabled():
    """Within this block (this thread), conv2d/matmul get TVM's own legalization, e.g. for a baseline."""
    return _off.set()


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
    if _off:
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


# Choose the bit-serial kernel when its estimated whole-kernel cycles are below this share of the paired int32
# kernel's (both A72 models fitted to bench/arm_static.py --bitserial): on the eight measured ternary layers the
# estimated ratio is 0.54-0.71 where the measured one is 0.55-0.75, and 1.46 for the 1x1 stride-2 layer (measured
# 0.98: a tie), which keeps the paired kernel; the margin covers the models' error near 1.
BITSERIAL_MAX_RATIO = 0.96
SELECTING_OPS = ("relax.nn.max_pool2d", "relax.reshape", "relax.flatten", "relax.permute_dims", "relax.squeeze",
                 "relax.expand_dims", "relax.strided_slice")


def _bound_call(expr, lookup):
    """The call bound to ``expr`` (following aliases), or None."""
    for _ in range(16):
        if not isinstance(expr, relax.Var):
            break
        bound = lookup(expr)
        if bound is None:
            return None
        expr = bound
    return expr if isinstance(expr, relax.Call) and hasattr(expr.op, "name") else None


def data_upper_bound(expr, lookup) -> int | None:
    """The largest value data ``expr`` can hold, as its producer proves it: Realize's saturate
    ``minimum(maximum(x, lo), hi)`` with constant ``lo >= 0`` before the cast to the stored dtype, reached through
    ops that only select or move values (max pool, reshape, flatten, ...); None when the producer does not show
    it (e.g. once it is legalized into a ``call_tir``).  ``lookup``: var -> bound value."""
    for _ in range(64):
        call = _bound_call(expr, lookup)
        if call is None:
            return None
        name = str(call.op.name)
        if name in SELECTING_OPS or name == "relax.astype":
            expr = call.args[0]
            continue
        if name != "relax.minimum":
            return None
        hi, low = constant_value(call.args[1], lookup), _bound_call(call.args[0], lookup)
        if hi is None or low is None or str(low.op.name) != "relax.maximum":
            return None
        lo = constant_value(low.args[1], lookup)
        if lo is None or np.min(lo) < 0:
            return None
        return int(np.floor(np.max(hi)))
    return None


def bitserial_decision(make, make_paired, weight, data_dtype: str, out_dtype: str, data_max, target) -> tuple:
    """``(plan or None, why or None)``: the bit-serial kernel (``bitserial.py``: ``and``/``cnt``, no multiply) for a
    layer with constant ternary ``weight`` and uint8 data proven ``<= data_max < 16`` on an aarch64 ``target``,
    when its estimated whole-kernel cycles are below ``BITSERIAL_MAX_RATIO`` of the paired int32 kernel's;
    ``why`` says what decided (None: the layer does not qualify at all: not ternary, not aarch64, ...).
    ``make(bits, acc_dtype)`` / ``make_paired()`` build the two plans (either may raise ValueError)."""
    if target is None or kernel_config(target, "int32").arch != "aarch64" or weight is None:
        return None, None
    if data_dtype != "uint8" or out_dtype not in ("int16", "int32") or not bs.is_ternary(weight):
        return None, None
    if data_max is None:
        return None, "ternary weights, but the data's range is not proven by its producer: paired int32 kernel"
    if data_max >= 1 << bs.MAX_BITS:
        return None, f"ternary weights, data <= {data_max} needs more than {bs.MAX_BITS} bit planes"
    bits = max(1, int(data_max).bit_length())
    try:
        plan, rival = make(bits, out_dtype), make_paired()
    except ValueError as e:
        return None, f"ternary weights: {e}"
    ours, theirs = bs.estimated_cycles(plan), paired.estimated_cycles(rival)
    ratio = ours / theirs
    what = (f"ternary weights, data <= {data_max} ({bits}-bit planes, {plan.lanes} in lanes): estimated "
            f"{ours:.0f} A72 cycles vs {theirs:.0f} for the paired int32 kernel (ratio {ratio:.2f}")
    if ratio < BITSERIAL_MAX_RATIO:
        return plan, f"{what} < {BITSERIAL_MAX_RATIO}): bit-serial"
    return None, f"{what} >= {BITSERIAL_MAX_RATIO}): paired int32 kept"


def conv2d_bitserial(call, target, weight, data_max) -> tuple:
    """``bitserial_decision`` for a conv2d call (NCHW/OIHW, groups 1, static shapes)."""
    attrs = call.attrs
    data_ty, weight_ty = _tensor_type(call.args[0]), _tensor_type(call.args[1])
    if data_ty is None or weight_ty is None or len(data_ty.shape) != 4 or int(attrs.groups) != 1 or \
            (attrs.data_layout, attrs.kernel_layout, attrs.out_layout) != ("NCHW", "OIHW", "NCHW"):
        return None, None
    dims, wdims = _static_dims(list(data_ty.shape)[1:]), _static_dims(list(weight_ty.shape))
    if dims is None or wdims is None:
        return None, None
    geometry = ([int(s) for s in attrs.strides], [int(p) for p in attrs.padding], [int(d) for d in attrs.dilation])
    return bitserial_decision(
        lambda bits, acc: bs.plan_bitserial_conv2d([1, *dims], wdims, bits, *geometry, acc_dtype=acc),
        lambda: paired.plan_paired_conv2d([1, *dims], wdims, "uint8", *geometry),
        weight, str(data_ty.dtype), str(attrs.out_dtype), data_max, target)


def dense_bitserial(call, target, weight, data_max) -> tuple:
    """``bitserial_decision`` for a matmul ``(M, K) @ (K, N)`` with static ``K``, ``N``."""
    a_ty, b_ty = _tensor_type(call.args[0]), _tensor_type(call.args[1])
    if a_ty is None or b_ty is None or len(a_ty.shape) != 2 or len(b_ty.shape) != 2:
        return None, None
    kn = _static_dims(list(b_ty.shape))
    if kn is None:
        return None, None
    return bitserial_decision(lambda bits, acc: bs.plan_bitserial_dense([1, kn[0]], kn, bits, acc),
                              lambda: paired.plan_paired_dense([1, kn[0]], kn, "uint8"),
                              weight, str(a_ty.dtype), str(call.attrs.out_dtype), data_max, target)


def conv2d_plan_for(call, target, weight: np.ndarray | None = None, data_max: int | None = None):
    """The plan this call would use on ``target`` (``Conv2dPlan``; ``PairedPlan`` for a proven int32 layer on
    aarch64 -- which needs the constant ``weight`` --; ``bitserial.BitserialPlan`` for a ternary layer whose data
    is proven ``<= data_max < 16``, ``data_upper_bound``, where it is estimated faster), or None when it is not
    ours."""
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
        found = conv2d_bitserial(call, target, weight, data_max)[0]
        if found is not None:
            return found
        found = _paired(lambda: paired.plan_paired_conv2d(
            [data_ty.shape[0], *dims], wdims, str(data_ty.dtype), [int(s) for s in attrs.strides],
            [int(p) for p in attrs.padding], [int(d) for d in attrs.dilation]),
            weight, str(data_ty.dtype), str(weight_ty.dtype), out_dtype, target)
        if found is not None:
            return found
    config = kernel_config(target, out_dtype)
    # int16 weights on VNNI: split into int8 parts (conv2d_vnni.weight_parts) when every weight is < 32640
    split = str(weight_ty.dtype) == "int16" and config.vnni and int(attrs.groups) == 1 and weight is not None \
        and int(weight.max()) < 32640
    try:
        return plan_conv2d([data_ty.shape[0], *dims], wdims, str(data_ty.dtype), out_dtype,
                           [int(s) for s in attrs.strides], [int(p) for p in attrs.padding],
                           [int(d) for d in attrs.dilation], int(attrs.groups), config=config,
                           layout="vnni" if split else None, weight_dtype=str(weight_ty.dtype))
    except ValueError:
        return None


def dense_plan_for(call, target, weight: np.ndarray | None = None, data_max: int | None = None):
    """The plan this matmul would use on ``target`` (``DensePlan``, or ``PairedPlan`` / ``BitserialPlan`` as in
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
    found = dense_bitserial(call, target, weight, data_max)[0]
    if found is not None:
        return found
    found = _paired(lambda: paired.plan_paired_dense([a_ty.shape[0], k[0]], kn, str(a_ty.dtype)), weight,
                    str(a_ty.dtype), str(b_ty.dtype), out_dtype, target)
    if found is not None:
        return found
    try:
        return plan_dense([a_ty.shape[0], k[0]], kn, str(a_ty.dtype), out_dtype,
                          config=kernel_config(target, out_dtype), weight_dtype=str(b_ty.dtype))
    except ValueError:
        return None


_HOST_LIBS: dict = {}      # structural hash -> [(PrimFunc, its host build)]: a packing is compiled once


def _host_lib(func: tirx.PrimFunc):
    """``func`` built for the host, cached per process: the packings depend on the layer's shapes only, and a
    build compiles many layers of one shape (and a search, the same layers many times); LLVM takes ~0.2 s
    per build."""
    bucket = _HOST_LIBS.setdefault(tvm_ffi.structural_hash(func), [])
    for known, lib in bucket:
        if tvm_ffi.structural_equal(known, func):
            return lib
    lib = tvm.tirx.build(func, target=tvm.target.Target("llvm"))
    bucket.append((func, lib))
    return lib


def _run_on_host(func: tirx.PrimFunc, weight: np.ndarray, out_shape, out_dtype: str) -> np.ndarray:
    lib = _host_lib(func)
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
    if value is not None and not isinstance(func, tirx.PrimFunc):   # a numpy packing (bitserial masks)
        return relax.const(np.ascontiguousarray(func(value)).astype(out_dtype), out_dtype)
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
    args = [call.args[0], _weight_input(bb, pack_func, weight, plan.packed_weight_shape,
                                        getattr(plan, "packed_weight_dtype", plan.weight_dtype),
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


def static_batch(call) -> tirx.IntImm | None:
    """The batch of ``call``'s data when static, as an int64 (its kernel is then built for it), else None
    (symbolic ``n``).  Every kernel of a graph is built the same way: ``FuseTIR`` (``graph.py``) maps a tensor
    to the buffers of its producer and its consumers, whose shapes must agree in type."""
    lead = list(call.args[0].ty.shape)[0]
    return tirx.IntImm("int64", int(lead.value)) if isinstance(lead, tirx.IntImm) else None


def layer_kind(call) -> str:
    """``"conv2d"`` for a ``relax.nn.conv2d`` call, ``"dense"`` for a ``relax.matmul``."""
    return "conv2d" if str(call.op.name) == "relax.nn.conv2d" else "dense"


def layer_plan(call, target, lookup):
    """The kernel plan of a conv2d/matmul ``call`` (``conv2d_plan_for``/``dense_plan_for``; None: not ours);
    ``lookup`` (var -> bound value) finds a constant weight and the data's producers bound earlier."""
    plan_for = conv2d_plan_for if layer_kind(call) == "conv2d" else dense_plan_for
    return plan_for(call, target, constant_value(call.args[1], lookup), data_upper_bound(call.args[0], lookup))


def layer_primfuncs(call, plan, epilogue=None) -> tuple:
    """The kernel's PrimFuncs for ``call``'s batch (static, or symbolic when None), with ``epilogue`` fused."""
    make = conv2d_primfuncs if layer_kind(call) == "conv2d" else dense_primfuncs
    return make(plan, static_batch(call), epilogue)


def _legalize_layer(bb, call):
    target = _cpu_target()
    plan = layer_plan(call, target, bb.lookup_binding) if target is not None else None
    if plan is None:
        return original_legalize(str(call.op.name))(bb, call)
    return emit_kernel(bb, call, plan, layer_primfuncs(call, plan), layer_kind(call))


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
    batch = static_batch(call)
    batch = tirx.Var("n", "int64") if batch is None else batch
    blocked = str(call.attrs.layout) == BLOCKED
    tag = f"max_pool2d_{plan.data_dtype}" + ("_blocked" if blocked else "")
    make = max_pool2d_blocked_primfunc if blocked else max_pool2d_primfunc
    gv = _add_kernel(bb, make(plan, batch), f"fxp_{tag}", tag, opaque=True)
    return relax.call_tir(gv, [call.args[0]], call.ty)


_LEGALIZERS = {"relax.nn.conv2d": _legalize_layer, "relax.matmul": _legalize_layer,
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
