"""The layer graph of a prepared Relax function: which tensors get a fixed-point format, and where.

A *layer* is an anchor op plus the ops fused into its requantize: ``conv2d``/``matmul`` (+ constant bias
``add``) and the residual ``add``, ``concat``, ``avg_pool2d`` and spatial ``mean`` anchors, each followed
by at most ``relu``/``clip`` ops.  Each layer's last value (its *tail*) is an activation that gets a format
(the plan key ``<layer>.output``); weighted layers add ``<layer>.weight`` and ``<layer>.bias``.  Function
parameters are the ``input`` layer.  Ops that keep values on their grid (max pool, reshape, flatten,
transpose, standalone relu/clip) are pass-through: they carry their producer's format.

Both ``Annotate`` (where to put the annotations), calibration (which tensors to observe) and the allocators
(fan-in, MACs, parameter counts) read this one analysis, so the plan keys always agree.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import networkx as nx
import numpy as np
from tvm import relax

from ._ir import FxpGraphError, const_np, consumers, is_const, main_bindings, op_name, static_shape

WEIGHTED = {"relax.nn.conv2d": "conv2d", "relax.matmul": "matmul"}
ANCHORS = {"relax.add": "add", "relax.concat": "concat", "relax.nn.avg_pool2d": "avgpool",
           "relax.mean": "mean"}
ACTIVATIONS = {"relax.nn.relu", "relax.clip"}
PASS_THROUGH = {"relax.nn.max_pool2d", "relax.reshape", "relax.flatten", "relax.permute_dims",
                "relax.squeeze", "relax.expand_dims", "relax.nn.relu", "relax.clip"}
SUPPORTED = set(WEIGHTED) | set(ANCHORS) | PASS_THROUGH


@dataclass
class Layer:
    name: str
    op: str                        # input | conv2d | matmul | add | concat | avgpool | mean
    inputs: list                   # producer layer names, in argument order
    out_shape: tuple               # per image (batch dimension dropped)
    anchor: object = None          # relax binding var of the anchor op (None for the input)
    tail: object = None            # relax var whose value is the layer's output activation
    weight: np.ndarray | None = None
    weight_axis: int = 0           # output-channel axis of the weight (0 for OIHW, 1 for matmul (K, N))
    bias: np.ndarray | None = None  # 1-D, one value per output channel
    bias_var: object = None        # relax binding var of the bias add
    fan_in: int = 0                # products per output element
    macs: int = 0                  # multiply-accumulates per image
    fused: list = field(default_factory=list)  # activation op names fused after the anchor
    pool_count: int = 0            # elements summed per output by avgpool/mean

    @property
    def output_key(self) -> str:
        return "input" if self.op == "input" and self.name == "input" else f"{self.name}.output"

    @property
    def weight_key(self) -> str:
        return f"{self.name}.weight"

    @property
    def bias_key(self) -> str:
        return f"{self.name}.bias"

    @property
    def channels(self) -> int:
        return 0 if self.weight is None else int(self.weight.shape[self.weight_axis])


@dataclass
class LayerGraph:
    layers: dict                   # name -> Layer, in topological order
    output: str                    # name of the layer the function returns (through pass-throughs)
    graph: nx.DiGraph

    def tensors(self) -> dict:
        """Plan key -> (kind, layer name, per-image shape) for every tensor that needs a format."""
        out = {}
        for layer in self.layers.values():
            out[layer.output_key] = ("input" if layer.op == "input" else "activation", layer.name,
                                     layer.out_shape)
            if layer.weight is not None:
                out[layer.weight_key] = ("weight", layer.name, layer.weight.shape)
            if layer.bias is not None:
                out[layer.bias_key] = ("bias", layer.name, layer.bias.shape)
        return out

    def by_tail(self) -> dict:
        return {l.tail: l for l in self.layers.values()}


def _per_image(shape, where: str) -> tuple:
    if shape is None:
        raise FxpGraphError(f"{where}: tensor has no known shape")
    rest = shape[1:]
    dyn = [s for s in rest if isinstance(s, str)]
    if dyn:
        raise FxpGraphError(f"{where}: dimensions {dyn} are dynamic; give a static input shape "
                            "(CLI --input-shape, or input_shape= in Python)")
    return tuple(int(s) for s in rest)


def analyze(func: relax.Function) -> LayerGraph:
    """Find the layers of a prepared function; raises FxpGraphError naming any unsupported node."""
    bindings = main_bindings(func)
    users = consumers(func)
    result = func.body.body
    layers: dict = {}
    source: dict = {}      # var on the integer domain -> layer that produced it
    inner: set = set()     # vars inside a layer (between anchor and tail)
    counters: dict = {}

    def new_name(kind):
        i = counters.get(kind, 0)
        counters[kind] = i + 1
        return f"{kind}_{i}"

    params = list(func.params)
    for p in params:
        name = "input" if len(params) == 1 else f"input_{p.name}"
        if str(p.ty.dtype) not in ("float32", "float16", "float64"):
            raise FxpGraphError(f"input {p.name}: dtype {p.ty.dtype} is not a float tensor")
        layers[name] = Layer(name, "input", [], _per_image(static_shape(p), f"input {p.name}"), tail=p)
        source[p] = name

    def single_user(var):
        us = users.get(var, [])
        return us[0] if len(us) == 1 and not var.same_as(result) else None

    def arg_layer(arg, where):
        if isinstance(arg, relax.Var) and arg in source:
            return source[arg]
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
            raise FxpGraphError(f"{where}: unsupported expression; only calls to supported ops can be realized")
        if opn in PASS_THROUGH and isinstance(e.args[0], relax.Var) and e.args[0] in source:
            source[v] = source[e.args[0]]
            continue
        if opn not in WEIGHTED and opn not in ANCHORS:
            raise FxpGraphError(f"{where}: op {opn} is not supported by the tvm-fxp realizer; supported ops: "
                                f"{sorted(SUPPORTED)}. Remove it from the model or file an issue.")
        out_shape = _per_image(static_shape(v), where)
        if opn in WEIGHTED:
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
            layer = Layer(new_name(kind), kind, [arg_layer(x, where)], out_shape, anchor=v,
                          weight=W, weight_axis=w_axis, fan_in=fan_in,
                          macs=int(np.prod(out_shape)) * fan_in)
        else:
            kind = ANCHORS[opn]
            if kind == "add":
                if any(is_const(a) for a in e.args):
                    raise FxpGraphError(f"{where}: add of a constant that is not a layer bias is not supported")
                ins = [arg_layer(a, where) for a in e.args]
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
                if any(int(p) for p in a.padding) and not a.count_include_pad:
                    raise FxpGraphError(f"{where}: padded avg_pool2d with count_include_pad=0 divides by a "
                                        "varying count; re-export with count_include_pad=1 or no padding")
                layer.pool_count = int(np.prod([int(k) for k in a.pool_size]))
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

    if not isinstance(result, relax.Var) or result not in source:
        raise FxpGraphError("the function must return one tensor computed by supported ops "
                            "(tuple outputs are not supported yet)")
    g = nx.DiGraph()
    for layer in layers.values():
        g.add_node(layer.name, op=layer.op)
        for i in layer.inputs:
            g.add_edge(i, layer.name)
    return LayerGraph(layers, source[result], g)
