"""Simulate: lower ``fxp.annotate`` to fake-quant, exactly, for accuracy search.

Runs on an annotated module (after ``Annotate``), instead of ``Realize``.  The whole function is computed in
float64: inputs are cast to float64, every annotation becomes
``clip(round_half_away(x * 2**f), qmin, qmax) * 2**-f``, weights and biases become their fake-quantized
constants, and average pools become an exact window sum times the same integer multiplier the integer graph
uses.  Every value is then an integer multiple of ``2**-f`` with magnitude below ``2**52 * 2**-f`` (checked
by ``Annotate``), so float64 holds it exactly and sums are exact in any order: the simulated output equals
the integer graph's output bit for bit.  The result is cast back to float32 (exact for <= 24-bit outputs).

Per op (the ops not listed are computed as they are, in float64, which is exact for the reason above):

- ``avg_pool2d``/``mean``: window sum times the integer multiplier ``m`` (per position when the window count
  varies) times ``2**-s``, as ``emitters.emit_pool_sum``;
- ``mul`` of two activations: the float64 product of ``qa * 2**-fa`` and ``qb * 2**-fb`` is ``qa*qb`` at
  ``2**-(fa+fb)``, exact while ``|qa*qb| < 2**52`` (``tvm_fxp.bounds.mul_arithmetic``);
- ``lrn``: the same table lookup as the integer graph (``emitters.emit_lrn_lookup``), then ``x * T * 2**-K``;
  the decomposed float ops of the importer are dropped;
- a table layer (``table.py``): the same lookup over the input's integers as the integer graph, times ``2**-K``
  (in the parametric search module, ``lower_table`` looks up the run-time table of the candidate's input format);
- a linear ``resize2d`` (``resize.py``): the integer graph's interpolation sums with its integer weights, times
  ``2**-(2 * WEIGHT_BITS)``;
- a softmax epilogue runs on the output cast to float32, exactly as after the realized graph's dequantize.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax
from tvm.relax.expr_functor import PyExprMutator, mutator

from .emitters import emit_lrn_lookup, emit_pool_sum, emit_round_clip, fconst, rebuild_weighted
from .relax_utils import FxpGraphError, const_np, is_const, main_bindings, map_relax_functions, op_name, rebind
from .analysis import EPILOGUE, PASS_THROUGH, LrnMatch, composite_patterns
from .ops import annotation_format, is_annotate

SIM_DTYPE = "float64"


def _result_dtypes(func) -> list:
    ty = func.body.body.ty
    if isinstance(ty, relax.TupleType):
        return [str(f.dtype) for f in ty.fields]
    return [str(ty.dtype)]


def map_result(bb, result, fn):
    """Apply ``fn(bb, expr, index)`` to the result, or to every field of a tuple result."""
    if isinstance(result.ty, relax.TupleType):
        fields = [fn(bb, bb.emit(relax.TupleGetItem(result, i), f"out{i}"), i) for i in range(len(result.ty.fields))]
        return bb.emit(relax.Tuple(fields), "outs")
    return fn(bb, result, 0)


def operand_format(var, producer):
    """The format of an activation: the ``fxp.annotate`` it comes from through pass-through ops."""
    seen = var
    while True:
        e = producer.get(seen)
        if is_annotate(e):
            return annotation_format(e)[0]
        if isinstance(e, relax.Var):
            seen = e
        elif op_name(e) in PASS_THROUGH:
            seen = e.args[0]
        else:
            return None


def simulate_function(func: relax.Function, lower_annotation=None, extra_params=(), probe: list | None = None,
                      lower_table=None) -> relax.Function:
    """Simulate ``func``; ``lower_annotation(bb, binding, value)`` may replace the default fake-quant of an
    ``fxp.annotate`` (``tvm_fxp.passes.plan_scorer`` feeds formats at run time through ``extra_params``), and
    ``lower_table(bb, binding, match, x)`` the lookup of a table layer over its (visited) input ``x`` (its table
    then comes at run time too). With ``lower_annotation`` and no ``lower_table``, table layers are their float64
    ops (the float model).

    With a ``probe`` list, the function returns ``(result, mean_0, mean_1, ...)``: per weighted layer (in
    graph order, its name appended to ``probe``) the mean of its conv/matmul output over every axis but the
    channel's (before the bias), for the label-free bias correction (``tvm_fxp.methods.correction``)."""
    return _Simulator(func, lower_annotation, extra_params, probe, lower_table).visit_expr(func)


@mutator
class _Simulator(PyExprMutator):
    """The parameters are cast to float64 ahead of the first binding, each binding is simulated
    (``_simulate``), and the result is cast back to the model's output dtypes where it is bound."""

    def __init__(self, func: relax.Function, lower_annotation, extra_params, probe, lower_table=None):
        super().__init__()
        self.lower_annotation, self.extra_params, self.probe = lower_annotation, list(extra_params), probe
        self.lower_table = lower_table
        self.out_dtypes = _result_dtypes(func)
        self.producer = {b.var: b.value for b in main_bindings(func)}
        composites = composite_patterns(func)
        self.float_ops = set()
        if lower_annotation is not None and lower_table is None:
            # formats fed at run time and no run-time tables: the function's own ops, their constants in float64
            self.float_ops = {v for a, m in composites.items() if not isinstance(m, LrnMatch) for v in m.inner + [a]}
            composites = {v: m for v, m in composites.items() if isinstance(m, LrnMatch)}
        self.composites = composites
        self.dropped = {v for m in composites.values() for v in m.inner}
        self.result = func.body.body
        if not isinstance(self.result, relax.Var) or self.result not in self.producer:
            raise FxpGraphError("main must return a var bound in its body (run relax.transform.Normalize)")
        self.params: list | None = list(func.params)
        self.means: list = []

    def visit_function_(self, func: relax.Function) -> relax.Expr:
        func = relax.Function(list(func.params) + self.extra_params, func.body, None, func.is_pure, func.attrs)
        return super().visit_function_(func)

    def visit_var_binding_(self, binding: relax.VarBinding) -> None:
        bb = self.builder_
        for p in self.params or ():
            self.set_var_remap(p, bb.emit(relax.op.astype(p, SIM_DTYPE), f"{p.name}_f64"))
        self.params = None
        if binding.var in self.dropped:
            return
        value = self._simulate(binding)
        if binding.var.same_as(self.result):
            value = value if isinstance(value, relax.Var) else bb.emit(value, binding.var.name)
            out = map_result(bb, value, lambda bb, r, i: bb.emit(relax.op.astype(r, self.out_dtypes[i]),
                                                                 f"sim_out{i}"))
            value = out if self.probe is None else bb.emit(relax.Tuple([out, *self.means]), "probed")
        rebind(self, binding, value)

    def _simulate(self, b: relax.VarBinding) -> relax.Expr:
        bb, producer, composites, probe = self.builder_, self.producer, self.composites, self.probe
        if b.var in composites:     # a table or LRN lookup of the composite's input (its inner ops are dropped)
            m = composites[b.var]
            x = self.visit_expr(m.x)
            if not isinstance(m, LrnMatch) and self.lower_table is not None:
                return self.lower_table(bb, b, m, x)
            if not isinstance(m, LrnMatch):
                from .table import emit_table_lookup

                t, table = emit_table_lookup(bb, x, operand_format(m.x, producer), m, SIM_DTYPE, b.var.name)
                return relax.op.multiply(t, fconst(np.ldexp(1.0, -table.frac)))
            fmt = operand_format(m.x, producer)
            attrs = {"size": m.size, "alpha": m.alpha, "beta": m.beta, "bias": m.bias}
            t, table = emit_lrn_lookup(bb, x, fmt, attrs, SIM_DTYPE, b.var.name)
            y = bb.emit(relax.op.multiply(x, t), f"{b.var.name}_xt")
            return relax.op.multiply(y, fconst(np.ldexp(1.0, -table.frac)))
        if b.var in self.float_ops:     # the op's constants in float64 before the call is normalized
            v = b.value
            args = [relax.const(const_np(a).astype(SIM_DTYPE), SIM_DTYPE) if is_const(a) else self.visit_expr(a)
                    for a in v.args]
            return relax.Call(v.op, args, v.attrs, v.ty_args)
        value = self.visit_expr(b.value)
        name = op_name(value)
        if is_annotate(value) and self.lower_annotation is not None:
            return self.lower_annotation(bb, b, value)
        if is_annotate(value):
            fmt, key = annotation_format(value)
            x = value.args[0]
            if is_const(x):
                return relax.const(fmt.fake_quantize(const_np(x)).astype(SIM_DTYPE), SIM_DTYPE)
            ndim = len(x.ty.shape)
            f = fmt.frac_array(ndim)
            q = emit_round_clip(bb, x, fmt, f, b.var.name)
            return relax.op.multiply(q, fconst(np.ldexp(1.0, -f)))
        if name in ("relax.nn.conv2d", "relax.matmul"):
            out = rebuild_weighted(value, value.args[0], value.args[1], SIM_DTYPE)
            ann = producer.get(b.value.args[1])
            if probe is None or not is_annotate(ann):
                return out
            y = bb.emit(out, b.var.name)
            ndim = len(b.var.ty.shape)
            axes = [a for a in range(ndim) if a != (1 if name == "relax.nn.conv2d" else ndim - 1)]
            probe.append(annotation_format(ann)[1].rsplit(".", 1)[0])
            self.means.append(bb.emit(relax.op.mean(y, axis=axes), f"{b.var.name}_mean"))
            return y
        if name == "relax.image.resize2d" and value.attrs.method == "linear":
            from .relax_utils import static_shape
            from .resize import WEIGHT_BITS, emit_interpolation, resize_weights

            rw = resize_weights(value.attrs, static_shape(b.value.args[0])[2:], static_shape(b.value)[2:], b.var.name)
            total = emit_interpolation(bb, value.args[0], rw, SIM_DTYPE, b.var.name)
            return relax.op.multiply(total, fconst(np.ldexp(1.0, -2 * WEIGHT_BITS)))
        if name in ("relax.mean", "relax.nn.avg_pool2d"):
            total, s = emit_pool_sum(bb, value, value.args[0], SIM_DTYPE, b.var.name)
            return relax.op.multiply(total, fconst(np.ldexp(1.0, -s)))
        if name in EPILOGUE and str(value.args[0].ty.dtype) == SIM_DTYPE:
            x = bb.emit(relax.op.astype(value.args[0], self.out_dtypes[0]), f"{b.var.name}_in")
            return relax.Call(value.op, [x] + list(value.args[1:]), value.attrs, value.ty_args)
        return value


@tvm.transform.module_pass(opt_level=0, name="tvm_fxp.Simulate")
class Simulate:
    """Lower annotations of ``main`` to exact float64 fake-quant."""

    def transform_module(self, mod: tvm.IRModule, ctx) -> tvm.IRModule:
        mod = map_relax_functions(mod, lambda f, name: simulate_function(f) if name == "main" else f)
        return relax.transform.DeadCodeElimination()(mod)
