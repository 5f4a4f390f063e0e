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

from .emitters import emit_lrn_lookup, emit_pool_sum, emit_round_clip, fconst, rebuild_weighted
from .relax_utils import const_np, is_const, main_bindings, map_relax_functions, op_name, rebuild_function
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
    ``lower_table(bb, binding, match, env)`` the lookup of a table layer (its table then comes at run time too).
    With ``lower_annotation`` and no ``lower_table``, table layers are their float64 ops (the float model).

    With a ``probe`` list, the function returns ``(result, mean_0, mean_1, ...)``: per weighted layer (in
    graph order, its name appended to ``probe``) the mean of its conv/matmul output over every axis but the
    channel's (before the bias), for the label-free bias correction (``tvm_fxp.methods.correction``)."""
    out_dtypes = _result_dtypes(func)
    producer = {b.var: b.value for b in main_bindings(func)}
    composites = composite_patterns(func)
    float_ops = set()
    if lower_annotation is not None and lower_table is None:
        # formats fed at run time and no run-time tables: the function's own ops, their constants in float64
        float_ops = {v for a, m in composites.items() if not isinstance(m, LrnMatch) for v in m.inner + [a]}
        composites = {v: m for v, m in composites.items() if isinstance(m, LrnMatch)}
    dropped = {v for m in composites.values() for v in m.inner}

    def prologue(bb, env):
        for p in func.params:
            env[p] = bb.emit(relax.op.astype(env[p], SIM_DTYPE), f"{p.name}_f64")

    def rule(bb, b, value, env):
        name = op_name(value)
        if b.var in dropped:
            return None
        if is_annotate(value) and lower_annotation is not None:
            return lower_annotation(bb, b, value)
        if is_annotate(value):
            fmt, key = annotation_format(value)
            x = value.args[0]
            if is_const(x):
                return relax.const(fmt.fake_quantize(const_np(x)).astype(SIM_DTYPE), SIM_DTYPE)
            ndim = len(x.ty.shape)
            f = fmt.frac_array(ndim)
            q = emit_round_clip(bb, x, fmt, f, b.var.name)
            return relax.op.multiply(q, fconst(np.ldexp(1.0, -f)))
        if b.var in composites and not isinstance(composites[b.var], LrnMatch) and lower_table is not None:
            return lower_table(bb, b, composites[b.var], env)
        if b.var in composites and not isinstance(composites[b.var], LrnMatch):
            from .table import emit_table_lookup

            m = composites[b.var]
            t, table = emit_table_lookup(bb, env[m.x], operand_format(m.x, producer), m, SIM_DTYPE, b.var.name)
            return relax.op.multiply(t, fconst(np.ldexp(1.0, -table.frac)))
        if b.var in composites:
            m = composites[b.var]
            x = env[m.x]
            fmt = operand_format(m.x, producer)
            attrs = {"size": m.size, "alpha": m.alpha, "beta": m.beta, "bias": m.bias}
            t, table = emit_lrn_lookup(bb, x, fmt, attrs, SIM_DTYPE, b.var.name)
            y = bb.emit(relax.op.multiply(x, t), f"{b.var.name}_xt")
            return relax.op.multiply(y, fconst(np.ldexp(1.0, -table.frac)))
        if name in ("relax.nn.conv2d", "relax.matmul"):
            out = rebuild_weighted(value, value.args[0], value.args[1], SIM_DTYPE)
            ann = producer.get(b.value.args[1])
            if probe is None or not is_annotate(ann):
                return out
            y = bb.emit(out, b.var.name)
            ndim = len(b.var.ty.shape)
            axes = [a for a in range(ndim) if a != (1 if name == "relax.nn.conv2d" else ndim - 1)]
            probe.append(annotation_format(ann)[1].rsplit(".", 1)[0])
            means.append(bb.emit(relax.op.mean(y, axis=axes), f"{b.var.name}_mean"))
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
            x = bb.emit(relax.op.astype(value.args[0], out_dtypes[0]), f"{b.var.name}_in")
            return relax.Call(value.op, [x] + list(value.args[1:]), value.attrs, value.ty_args)
        if b.var in float_ops:
            args = [relax.const(const_np(a).astype(SIM_DTYPE), SIM_DTYPE) if is_const(a) else a for a in value.args]
            return relax.Call(value.op, args, value.attrs, value.ty_args)
        return value

    means: list = []

    def epilogue(bb, result, env):
        out = map_result(bb, result, lambda bb, r, i: bb.emit(relax.op.astype(r, out_dtypes[i]), f"sim_out{i}"))
        return out if probe is None else bb.emit(relax.Tuple([out, *means]), "probed")

    return rebuild_function(func, rule, params=list(func.params) + list(extra_params), prologue=prologue,
                            epilogue=epilogue)


@tvm.transform.module_pass(opt_level=0, name="tvm_fxp.Simulate")
class Simulate:
    """Lower annotations of ``main`` to exact float64 fake-quant."""

    def transform_module(self, mod: tvm.IRModule, ctx) -> tvm.IRModule:
        mod = map_relax_functions(mod, lambda f, name: simulate_function(f) if name == "main" else f)
        return relax.transform.DeadCodeElimination()(mod)
