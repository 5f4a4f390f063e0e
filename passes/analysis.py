"""The layer graph of a prepared Relax function: which tensors get a fixed-point format, and where.

A *layer* is an anchor op plus the ops fused into its requantize: ``conv2d``/``matmul`` (+ constant bias
``add``), the residual ``add`` (n-ary: a chain of adds whose inner sums have no other user is one layer),
``concat``, ``avg_pool2d`` and spatial ``mean`` anchors, the elementwise product ``mul`` of two activations
(squeeze-and-excite gating, hard-swish), elementwise ``max``/``min`` of activations, local response
normalisation ``lrn`` (recognised from the ops the ONNX importer decomposes it into) and ``table`` (an elementwise
function of one activation: sigmoid, SiLU, tanh, Mish..., ``table.py``), each followed by at most
``relu``/``clip`` ops.  Each layer's last
value (its *tail*) is an activation that gets a format (the plan key ``<layer>.output``); weighted layers
add ``<layer>.weight`` and ``<layer>.bias``.  Function parameters are the ``input`` layer(s).  Ops that keep
values on their grid (max pool, reshape, flatten, transpose, slices, zero/edge/reflect pads, nearest resizes,
standalone relu/clip) are pass-through: they carry their producer's format.  A ``softmax`` (or ``log_softmax``) on the output is the float *epilogue*: it
runs after the output dequantize, in float32, in the simulated and the realized graph alike.

Both ``Annotate`` (where to put the annotations), calibration (which tensors to observe) and the allocators
(fan-in, MACs, parameter counts) read this one analysis, so the plan keys always agree.  The LRN pattern
(``composite_patterns``), used by several passes, lives here too; the layer graph itself
(``tvm_fxp.layer_graph``) and every layer's integer arithmetic (``tvm_fxp.bounds``) are TVM-free.
"""

from __future__ import annotations

from dataclasses import dataclass

import networkx as nx
import numpy as np
from tvm import relax

from tvm_fxp.layer_graph import Layer, LayerGraph, float_islands  # noqa: F401 -- the model this analysis builds

from .relax_utils import FxpGraphError, const_np, consumers, is_const, main_bindings, op_name, static_shape

WEIGHTED = {"relax.nn.conv2d": "conv2d", "relax.matmul": "matmul"}
ANCHORS = {"relax.add": "add", "relax.concat": "concat", "relax.nn.avg_pool2d": "avgpool",
           "relax.mean": "mean", "relax.multiply": "mul", "relax.maximum": "max", "relax.minimum": "min"}
ACTIVATIONS = {"relax.nn.relu", "relax.clip"}
PASS_THROUGH = {"relax.nn.max_pool2d", "relax.reshape", "relax.flatten", "relax.permute_dims",
                "relax.squeeze", "relax.expand_dims", "relax.nn.relu", "relax.clip", "relax.strided_slice",
                "relax.nn.pad", "relax.image.resize2d"}
EPILOGUE = {"relax.nn.softmax", "relax.nn.log_softmax"}
SUPPORTED = set(WEIGHTED) | set(ANCHORS) | PASS_THROUGH | EPILOGUE | {"LRN (decomposed by the importer)"} | \
    {"elementwise functions of one activation (sigmoid, tanh, SiLU, Mish, ...): lookup tables"}
# unary elementwise ops with no integer realization: with float islands allowed (``ISLANDS_ATTR`` on ``main``,
# set by ``allow_float_islands``), each becomes a layer of kind ``float`` computed in float64 between a
# dequantize of its (quantized) input and the quantize of its output, in the simulation and in the integer
# graph alike; ``float_islands`` lists them and the report shows them
FLOAT_ISLAND_OPS = {"relax.sigmoid", "relax.tanh", "relax.exp", "relax.erf", "relax.log", "relax.sqrt",
                    "relax.rsqrt", "relax.nn.gelu", "relax.nn.gelu_tanh", "relax.nn.silu", "relax.nn.softplus",
                    "relax.nn.leakyrelu", "relax.nn.selu", "relax.nn.elu", "relax.abs", "relax.negative",
                    "relax.square"}
ISLANDS_ATTR = "fxp_allow_float_islands"


def allow_float_islands(mod):
    """``mod`` with float islands allowed in ``main`` (see ``FLOAT_ISLAND_OPS``)."""
    import tvm

    out = tvm.IRModule(dict(mod.functions), attrs=mod.attrs)
    out["main"] = mod["main"].with_attr(ISLANDS_ATTR, True)
    return out


def islands_allowed(func) -> bool:
    return func.attrs is not None and ISLANDS_ATTR in func.attrs and bool(func.attrs[ISLANDS_ATTR])


# ---- composite patterns --------------------------------------------------------------------------------------

@dataclass
class LrnMatch:
    """``y = x / (bias + alpha/size * sum_{window} x^2) ** beta`` across channels (ONNX ``LRN``)."""

    x: object
    size: int
    alpha: float
    beta: float
    bias: float
    inner: list                    # the vars of the decomposition, anchor excluded


def _scalar(expr) -> float | None:
    if is_const(expr) and const_np(expr).size == 1:
        return float(const_np(expr).reshape(()))
    return None


def _match_lrn(b, producer, users) -> LrnMatch | None:
    """Match TVM's import of ONNX ``LRN``: ``x / power(add(multiply(squeeze(avg_pool3d(expand_dims(x * x))),
    alpha), bias), beta)`` (4-D input, window along channels, zero padding ``size // 2`` both sides)."""
    v = b.value
    if op_name(v) != "relax.divide" or not isinstance(v.args[1], relax.Var):
        return None
    x = v.args[0]
    chain = []

    def step(var, name):
        p = producer.get(var)
        if op_name(p) != name or len(users.get(var, [])) != 1:
            return None
        chain.append(var)
        return p

    pw = step(v.args[1], "relax.power")
    if pw is None or _scalar(pw.args[1]) is None:
        return None
    add = step(pw.args[0], "relax.add")
    if add is None:
        return None
    k, a_var = (_scalar(add.args[1]), add.args[0]) if _scalar(add.args[1]) is not None else \
        (_scalar(add.args[0]), add.args[1])
    mul = step(a_var, "relax.multiply") if k is not None else None
    if mul is None:
        return None
    alpha, s_var = (_scalar(mul.args[1]), mul.args[0]) if _scalar(mul.args[1]) is not None else \
        (_scalar(mul.args[0]), mul.args[1])
    sq = step(s_var, "relax.squeeze") if alpha is not None else None
    pool = step(sq.args[0], "relax.nn.avg_pool3d") if sq is not None else None
    ex = step(pool.args[0], "relax.expand_dims") if pool is not None else None
    if ex is None:
        return None
    square = producer.get(ex.args[0])
    if op_name(square) != "relax.multiply" or not (square.args[0].same_as(x) and square.args[1].same_as(x)) \
            or len(users.get(ex.args[0], [])) != 1:
        return None
    chain.append(ex.args[0])
    a = pool.attrs
    size = int(a.pool_size[0])
    if [int(p) for p in a.pool_size] != [size, 1, 1] or any(int(s) != 1 for s in a.strides) or \
            [int(p) for p in a.padding] != [size // 2, 0, 0, size // 2, 0, 0] or not a.count_include_pad or \
            [int(d) for d in ex.attrs.axis] != [1] or [int(d) for d in sq.attrs.axis] != [1] or \
            static_shape(x) is None or len(static_shape(x)) != 4:
        return None
    return LrnMatch(x, size, alpha, _scalar(pw.args[1]), k, chain[::-1])


def composite_patterns(func: relax.Function) -> dict:
    """``{anchor var: LrnMatch | TableMatch}`` for every composite op of ``func`` realized as one layer (LRN,
    and the elementwise functions of one activation realized as lookup tables, ``passes/table.py``)."""
    from .table import table_patterns

    bindings = main_bindings(func)
    producer = {b.var: b.value for b in bindings}
    users = consumers(func)
    out = {}
    for b in bindings:
        m = _match_lrn(b, producer, users)
        if m is not None:
            out[b.var] = m
    lrn_vars = set(out) | {v for m in out.values() for v in m.inner}
    out.update(table_patterns(bindings, producer, users, set(result_fields(func, producer)), lrn_vars))
    return out


def composite_inner_vars(func: relax.Function) -> set:
    """Vars inside composite ops (anchors included): the affine rewrites of ``Prepare`` leave them alone."""
    out = set()
    for anchor, m in composite_patterns(func).items():
        out.add(anchor)
        out.update(m.inner)
    return out


# ---- the analysis ----------------------------------------------------------------------------------------------

def _per_image(shape, where: str) -> tuple:
    if shape is None:
        raise FxpGraphError(f"{where}: tensor has no known shape")
    rest = shape[1:]
    dyn = [s for s in rest if isinstance(s, str)]
    if dyn:
        raise FxpGraphError(f"{where}: dimensions {dyn} are dynamic; give a static input shape "
                            "(CLI --input-shape, or input_shape= in Python)")
    return tuple(int(s) for s in rest)


def avg_pool_counts(call) -> np.ndarray | None:
    """Per output position, how many input elements an ``avg_pool2d`` with ``count_include_pad=False`` and
    padding averages (``None`` when every window counts the full ``pool_size``)."""
    a = call.attrs
    pads = [int(p) for p in a.padding]
    if a.count_include_pad or not any(pads):
        return None
    h, w = static_shape(call.args[0])[2:]
    kh, kw = (int(k) for k in a.pool_size)
    sh, sw = (int(s) for s in a.strides)
    ones = np.pad(np.ones((h, w), np.int64), ((pads[0], pads[2]), (pads[1], pads[3])))
    oh = (h + pads[0] + pads[2] - kh) // sh + 1
    ow = (w + pads[1] + pads[3] - kw) // sw + 1
    return np.array([[ones[i * sh:i * sh + kh, j * sw:j * sw + kw].sum() for j in range(ow)] for i in range(oh)])


def result_fields(func, producer=None) -> list:
    """The tensors a function returns: its result, or the fields of its result tuple (through aliases)."""
    producer = producer if producer is not None else {b.var: b.value for b in main_bindings(func)}
    r = func.body.body
    while isinstance(r, relax.Var) and isinstance(producer.get(r), (relax.Var, relax.Tuple)) and \
            isinstance(r.ty, relax.TupleType):
        r = producer[r]
    if isinstance(r, relax.Tuple):
        return list(r.fields)
    return [r]


def _check_pass_through(e, where: str):
    """The pass-through ops that select values only under conditions: zero padding, nearest resizing."""
    name = op_name(e)
    if name == "relax.nn.pad":
        if e.attrs.pad_mode not in ("constant", "replicate", "reflect"):
            raise FxpGraphError(f"{where}: pad mode {e.attrs.pad_mode} is not supported (constant, edge, reflect)")
        if e.attrs.pad_mode == "constant" and float(e.attrs.pad_value) != 0.0:
            raise FxpGraphError(f"{where}: Pad with the constant {float(e.attrs.pad_value)} is not supported; only "
                                "zero padding (or edge/reflect) stays on every fixed-point grid")
    elif name == "relax.image.resize2d":
        if e.attrs.method != "nearest_neighbor" or e.attrs.layout != "NCHW" or \
                e.attrs.coordinate_transformation_mode == "tf_crop_and_resize":
            raise FxpGraphError(f"{where}: resize {e.attrs.method} ({e.attrs.coordinate_transformation_mode}) "
                                "is not supported: nearest (any coordinate mode but tf_crop_and_resize), or linear "
                                "(half_pixel, pytorch_half_pixel, align_corners, asymmetric)")


def analyze(func: relax.Function) -> LayerGraph:
    """Find the layers of a prepared function; raises FxpGraphError naming any unsupported node."""
    bindings = main_bindings(func)
    producer = {b.var: b.value for b in bindings}
    users = consumers(func)
    results = result_fields(func, producer)
    result_set = set(results)
    composites = composite_patterns(func)
    layers: dict = {}
    source: dict = {}      # var on the integer domain -> layer that produced it
    inner: set = set()     # vars inside a layer (between anchor and tail, or inside a composite op)
    epilogue: dict = {}    # float var after the output dequantize -> the layer it is computed from
    counters: dict = {}
    for m in composites.values():
        inner.update(m.inner)

    def is_plain_add(var):
        e = producer.get(var)
        return op_name(e) == "relax.add" and not any(is_const(a) for a in e.args)

    # inner sums of an n-ary add: an add of two tensors whose only user is another such add
    absorbed = {b.var for b in bindings if is_plain_add(b.var) and b.var not in result_set
                and len(users.get(b.var, [])) == 1 and is_plain_add(users[b.var][0].var)}
    inner |= absorbed

    def add_leaves(var):
        if var in absorbed:
            return [leaf for a in producer[var].args for leaf in add_leaves(a)]
        return [var]

    def new_name(kind):
        i = counters.get(kind, 0)
        counters[kind] = i + 1
        return f"{kind}_{i}"

    allow_islands = islands_allowed(func)
    params = list(func.params)
    for p in params:
        name = "input" if len(params) == 1 else f"input_{p.name}"
        if str(p.ty.dtype) not in ("float32", "float16", "float64"):
            raise FxpGraphError(f"input {p.name}: dtype {p.ty.dtype} is not a float tensor")
        layers[name] = Layer(name, "input", [], _per_image(static_shape(p), f"input {p.name}"), tail=p)
        source[p] = name

    def single_user(var):
        us = users.get(var, [])
        return us[0] if len(us) == 1 and var not in result_set else None

    def arg_layer(arg, where):
        if isinstance(arg, relax.Var) and arg in source:
            return source[arg]
        if is_const(arg):
            raise FxpGraphError(f"{where}: an operand is a constant that Prepare could not fold into a layer "
                                "(only per-channel or scalar constants fold); tvm-fxp cannot realize it")
        raise FxpGraphError(f"{where}: operand {getattr(arg, 'name', arg)} is not a quantized tensor "
                            "(an op between layers that tvm-fxp cannot realize?)")

    for b in bindings:
        v, e = b.var, b.value
        where = f"node {v.name} ({op_name(e) or type(e).__name__})"
        if v in inner:
            continue
        opn = op_name(e)
        if opn is None:
            if isinstance(e, relax.Var) and e in source:
                source[v] = source[e]
                continue
            if isinstance(e, relax.Var) and e in epilogue:
                epilogue[v] = epilogue[e]
                continue
            if isinstance(e, (relax.Tuple, relax.Var)) and isinstance(v.ty, relax.TupleType):
                continue   # the result tuple (checked field by field below)
            raise FxpGraphError(f"{where}: unsupported expression; only calls to supported ops can be realized")
        linear = opn == "relax.image.resize2d" and e.attrs.method == "linear"   # a layer: resize.py
        if opn in PASS_THROUGH and isinstance(e.args[0], relax.Var) and e.args[0] in source and v not in composites \
                and not linear:
            _check_pass_through(e, where)
            source[v] = source[e.args[0]]
            continue
        if opn in EPILOGUE and isinstance(e.args[0], relax.Var) and e.args[0] in source:
            epilogue[v] = source[e.args[0]]
            continue
        if isinstance(e.args[0], relax.Var) and e.args[0] in epilogue and \
                (opn in PASS_THROUGH - ACTIVATIONS or opn in EPILOGUE):
            epilogue[v] = epilogue[e.args[0]]
            continue
        if isinstance(e.args[0], relax.Var) and e.args[0] in epilogue:
            raise FxpGraphError(f"{where}: only layout ops may follow the softmax epilogue (it runs in float "
                                "after the output dequantize)")
        island = opn in FLOAT_ISLAND_OPS and allow_islands and v not in composites
        if opn in FLOAT_ISLAND_OPS and not allow_islands and v not in composites:
            raise FxpGraphError(f"{where}: op {opn} has no integer realization in tvm-fxp; to keep it in float "
                                "between a dequantize and a quantize (a float island, listed in the report), "
                                "pass --allow-float-islands (Python: load_model/quantize(..., "
                                "allow_float_islands=True)), or remove it from the model")
        if opn not in WEIGHTED and opn not in ANCHORS and v not in composites and not island and not linear:
            raise FxpGraphError(f"{where}: op {opn} is not supported by the tvm-fxp realizer; supported ops: "
                                f"{sorted(SUPPORTED)}. Remove it from the model or file an issue.")
        out_shape = _per_image(static_shape(v), where)
        if v in composites and not isinstance(composites[v], LrnMatch):
            m = composites[v]
            layer = Layer(new_name("table"), "table", [arg_layer(m.x, where)], out_shape, anchor=v,
                          macs=int(np.prod(out_shape)), attrs={"match": m, "fn": m.describe})
        elif v in composites:
            m = composites[v]
            layer = Layer(new_name("lrn"), "lrn", [arg_layer(m.x, where)], out_shape, anchor=v,
                          macs=int(np.prod(out_shape)) * (m.size + 1),
                          attrs={"size": m.size, "alpha": m.alpha, "beta": m.beta, "bias": m.bias})
            if m.bias <= 0:
                raise FxpGraphError(f"{where}: LRN with bias {m.bias} <= 0 cannot be tabulated")
        elif linear:
            from .resize import WEIGHT_BITS, resize_weights

            in_shape = static_shape(e.args[0])
            rw = resize_weights(e.attrs, in_shape[2:], out_shape[1:], where)
            layer = Layer(new_name("resize"), "resize", [arg_layer(e.args[0], where)], out_shape, anchor=v,
                          macs=4 * int(np.prod(out_shape)),
                          attrs={"weights": rw, "mode": str(e.attrs.coordinate_transformation_mode),
                                 "weight_bits": WEIGHT_BITS})
        elif island:
            if len([a for a in e.args if isinstance(a.ty, relax.TensorType)]) != 1:
                raise FxpGraphError(f"{where}: a float island must be a unary op")
            layer = Layer(new_name("float"), "float", [arg_layer(e.args[0], where)], out_shape, anchor=v,
                          attrs={"op": opn})
        elif opn in WEIGHTED:
            kind = WEIGHTED[opn]
            x, w = e.args
            if not is_const(w):
                raise FxpGraphError(f"{where}: weights must be constants (run tvm_fxp.passes.Prepare)")
            W = const_np(w)
            if kind == "conv2d":
                a = e.attrs
                if a.data_layout != "NCHW" or a.kernel_layout != "OIHW":
                    raise FxpGraphError(f"{where}: only NCHW/OIHW conv2d is supported")
                fan_in, w_axis = int(np.prod(W.shape[1:])), 0
            else:
                if W.ndim != 2:
                    raise FxpGraphError(f"{where}: matmul weights must be 2-D, got {W.shape}")
                fan_in, w_axis = int(W.shape[0]), 1
            if not np.all(np.isfinite(W)):
                raise FxpGraphError(f"{where}: weights contain NaN/inf; fix the model's weights")
            layer = Layer(new_name(kind), kind, [arg_layer(x, where)], out_shape, anchor=v,
                          weight=W, weight_axis=w_axis, fan_in=fan_in,
                          macs=int(np.prod(out_shape)) * fan_in)
        else:
            kind = ANCHORS[opn]
            if kind in ("add", "mul", "max", "min"):
                if any(is_const(a) for a in e.args):
                    what = {"add": "add", "mul": "multiply", "max": "maximum", "min": "minimum"}[kind]
                    raise FxpGraphError(f"{where}: {what} of a constant that is neither a layer bias nor a "
                                        "per-channel/scalar affine Prepare could fold is not supported")
                args = [leaf for a in e.args for leaf in add_leaves(a)] if kind == "add" else list(e.args)
                ins = [arg_layer(a, where) for a in args]
            elif kind == "concat":
                ins = [arg_layer(a, where) for a in e.args[0].fields]
            else:
                ins = [arg_layer(e.args[0], where)]
            if kind == "mean":
                axes = [int(a) for a in e.attrs.axis]
                nd = len(static_shape(e.args[0]))
                if sorted(a % nd for a in axes) != [2, 3] or nd != 4:
                    raise FxpGraphError(f"{where}: only mean over the spatial axes (global average pool) "
                                        "is supported")
            layer = Layer(new_name(kind), kind, ins, out_shape, anchor=v)
            if kind == "mean":
                layer.pool_count = int(np.prod(static_shape(e.args[0])[2:]))
            elif kind == "avgpool":
                a = e.attrs
                if a.layout != "NCHW" or a.ceil_mode or any(int(d) != 1 for d in a.dilation):
                    raise FxpGraphError(f"{where}: only NCHW avg_pool2d without ceil_mode/dilation is supported")
                layer.pool_count = int(np.prod([int(k) for k in a.pool_size]))
            elif kind == "mul":
                layer.macs = int(np.prod(out_shape))
        tail = v
        # fuse the bias (weighted layers only) and activations that are the tail's only consumer
        while True:
            nxt = single_user(tail)
            if nxt is None:
                break
            nop = op_name(nxt.value)
            if (nop == "relax.add" and layer.weight is not None and layer.bias is None and not layer.fused
                    and nxt.value.args[0].same_as(tail) and is_const(nxt.value.args[1])):
                c = const_np(nxt.value.args[1])
                ch = layer.channels
                if c.size not in (1, ch) or (c.ndim and max(c.shape) != c.size):
                    raise FxpGraphError(f"node {nxt.var.name}: bias of shape {c.shape} is not per channel")
                layer.bias = np.broadcast_to(c.reshape(-1), (ch,)).astype(np.float32).copy()
                layer.bias_var = nxt.var
            elif nop in ACTIVATIONS and nxt.value.args[0].same_as(tail):
                layer.fused.append(nop.split(".")[-1])
            else:
                break
            inner.add(nxt.var)
            tail = nxt.var
        layer.tail = tail
        layers[layer.name] = layer
        source[tail] = layer.name

    outputs, epi = [], []
    for r in results:
        if isinstance(r, relax.Var) and r in source:
            outputs.append(source[r])
        elif isinstance(r, relax.Var) and r in epilogue and len(results) == 1:
            outputs.append(epilogue[r])
            epi = [b.var.name for b in bindings if b.var in epilogue]
        else:
            raise FxpGraphError("the function must return tensors computed by supported ops (or one softmax "
                                f"of such a tensor); {getattr(r, 'name', r)} is not")
    g = nx.DiGraph()
    for layer in layers.values():
        g.add_node(layer.name, op=layer.op)
        for i in layer.inputs:
            g.add_edge(i, layer.name)
    return LayerGraph(layers, outputs[0], g, outputs, epi)
