"""Annotate: attach a plan's formats to a prepared Relax module as ``fxp.annotate`` calls.

Runs after ``Prepare`` and before ``Simulate`` or ``Realize``.  Every input parameter, every weight and
bias constant and every layer output (see ``analysis``) is wrapped in ``fxp.annotate(x, format, key)``.
The plan is validated against the model first: a plan for another model, a format that cannot be realized
(bias finer than the accumulator, a per-channel activation, an accumulator beyond 52 bits) is refused
with the offending tensor named.
"""

from __future__ import annotations

import dataclasses

import numpy as np

import tvm
from tvm import relax
from tvm.relax.expr_functor import PyExprMutator, mutator

from tvm_fxp.bounds import layer_arithmetic
from tvm_fxp.plan import Plan, PlanError

from .relax_utils import const_np, is_const, map_relax_functions, rebind
from .analysis import LayerGraph, analyze
from .ops import annotate


def validate_plan(lg: LayerGraph, plan: Plan) -> dict:
    """Check ``plan`` against the layer graph; return ``{layer: LayerArithmetic}`` for weighted/anchor layers."""
    plan.check_keys(lg.tensors())
    for name in plan.bias_correction:
        if name not in lg.layers or lg.layers[name].bias is None:
            raise PlanError(f"bias_correction names {name!r}, which is not a layer with a bias in this model")
    for key, (kind, _, _) in lg.tensors().items():
        if kind in ("activation", "input") and plan[key].per_channel:
            raise PlanError(f"{key}: activations take per-tensor formats only")
    out = {}
    for layer in lg.layers.values():
        if layer.op == "input":
            continue
        fmts = [plan[lg.layers[i].output_key] for i in layer.inputs]
        out[layer.name] = layer_arithmetic(layer, plan, fmts)
    return out


@mutator
class _Annotator(PyExprMutator):
    """Wraps the parameters (first, in the function's first block), each weighted layer's weight and bias and
    each layer's output in ``fxp.annotate``."""

    def __init__(self, plan: Plan, lg: LayerGraph):
        super().__init__()
        self.plan = plan
        self.by_anchor = {l.anchor: l for l in lg.layers.values() if l.weight is not None}
        self.by_bias = {l.bias_var: l for l in lg.layers.values() if l.bias_var is not None}
        self.by_tail = lg.by_tail()
        self.params: list | None = None

    def visit_function_(self, func: relax.Function) -> relax.Expr:
        self.params = list(func.params)
        return super().visit_function_(func)

    def visit_var_binding_(self, binding: relax.VarBinding) -> None:
        bb, plan, b = self.builder_, self.plan, binding
        for p in self.params or ():
            layer = self.by_tail[p]
            self.set_var_remap(p, bb.emit(annotate(p, plan[layer.output_key], layer.output_key), f"{p.name}_fxp"))
        self.params = None
        value = self.visit_expr(b.value)
        if b.var in self.by_anchor:
            layer = self.by_anchor[b.var]
            w = bb.emit(annotate(value.args[1], plan[layer.weight_key], layer.weight_key), f"{layer.name}_w")
            value = relax.Call(value.op, [value.args[0], w], value.attrs)
        if b.var in self.by_bias:
            layer = self.by_bias[b.var]
            fmt = plan[layer.bias_key]
            if fmt.per_channel:  # the plan indexes the 1-D bias; the constant is e.g. (1, C, 1, 1)
                shape = [int(s) for s in value.args[1].ty.shape]
                fmt = dataclasses.replace(fmt, axis=int(np.argmax(shape)) if max(shape) > 1 else len(shape) - 1)
            b_value = value.args[1]
            if layer.name in plan.bias_correction:
                if not is_const(b_value):
                    raise PlanError(f"{layer.name}: bias_correction needs a constant bias")
                b_value = relax.const(plan.corrected_bias(layer.name, const_np(b_value)))
            bias = bb.emit(annotate(b_value, fmt, layer.bias_key), f"{layer.name}_b")
            value = relax.Call(value.op, [value.args[0], bias], value.attrs)
        if b.var in self.by_tail:
            layer = self.by_tail[b.var]
            raw = bb.emit(value, b.var.name)
            value = annotate(raw, plan[layer.output_key], layer.output_key)
        rebind(self, b, value)


def annotate_function(func: relax.Function, plan: Plan) -> relax.Function:
    lg = analyze(func)
    validate_plan(lg, plan)

    out = _Annotator(plan, lg).visit_expr(func)
    claims = accumulator_claims(plan)
    if claims:
        out = out.with_attr(CLAIMS_ATTR, claims)
    tiled = tiled_claims(plan)
    return out.with_attr(TILE_CLAIMS_ATTR, tiled) if tiled else out


CLAIMS_ATTR = "fxp_accumulator_claims"
TILE_CLAIMS_ATTR = "fxp_accumulator_tile_claims"


def accumulator_claims(plan: Plan) -> dict:
    """``{layer: accumulator bits}`` the plan's method proved (``plan.proofs``); ``Realize`` refuses a layer
    whose weights, under the plan's formats, need more (a tampered plan or one for other weights)."""
    return {k: int(p.acc_bits) for k, p in plan.proofs.items()}


def tiled_claims(plan: Plan) -> list:
    """Layers whose claim is per k-tile (``tvm_fxp.bounds.k_tiles``): each partial sum fits the claimed bits,
    the whole reduction need not; ``Realize`` recomputes the tiles and checks that."""
    return sorted(k for k, p in plan.proofs.items() if p.tiles)


@tvm.transform.module_pass(opt_level=0, name="tvm_fxp.Annotate")
class Annotate:
    """Mark every tensor of ``main`` with its format from ``plan`` (a ``Plan`` or a path to plan JSON)."""

    def __init__(self, plan):
        self.plan = plan if isinstance(plan, Plan) else Plan.load(plan)

    def transform_module(self, mod: tvm.IRModule, ctx) -> tvm.IRModule:
        return map_relax_functions(mod, lambda f, name: annotate_function(f, self.plan) if name == "main" else f)
