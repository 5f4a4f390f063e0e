"""Simulate: lower ``fxp.annotate`` to fake-quant, exactly, for accuracy search.

Runs on an annotated module (after ``Annotate``), instead of ``Realize``.  The whole function is computed in
float64: inputs are cast to float64, every annotation becomes
``clip(round_half_away(x * 2**f), qmin, qmax) * 2**-f``, weights and biases become their fake-quantized
constants, and average pools become an exact window sum times the same integer multiplier the integer graph
uses.  Every value is then an integer multiple of ``2**-f`` with magnitude below ``2**52 * 2**-f`` (checked
by ``Annotate``), so float64 holds it exactly and sums are exact in any order: the simulated output equals
the integer graph's output bit for bit.  The result is cast back to float32 (exact for <= 24-bit outputs).
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax

from ._arith import emit_pool_sum, emit_round_clip, fconst, rebuild_weighted
from ._ir import const_np, is_const, map_relax_functions, op_name, rebuild_function
from .ops import annotation_format, is_annotate

SIM_DTYPE = "float64"


def simulate_function(func: relax.Function, lower_annotation=None, extra_params=()) -> relax.Function:
    """Simulate ``func``; ``lower_annotation(bb, binding, value)`` may replace the default fake-quant of an
    ``fxp.annotate`` (``tvm_fxp.passes.search`` feeds formats at run time through ``extra_params``)."""
    out_dtype = str(func.body.body.ty.dtype)

    def prologue(bb, env):
        for p in func.params:
            env[p] = bb.emit(relax.op.astype(env[p], SIM_DTYPE), f"{p.name}_f64")

    def rule(bb, b, value, env):
        name = op_name(value)
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
        if name in ("relax.nn.conv2d", "relax.matmul"):
            return rebuild_weighted(value, value.args[0], value.args[1], SIM_DTYPE)
        if name in ("relax.mean", "relax.nn.avg_pool2d"):
            total, s = emit_pool_sum(bb, value, value.args[0], SIM_DTYPE, b.var.name)
            return relax.op.multiply(total, fconst(np.ldexp(1.0, -s)))
        return value

    return rebuild_function(func, rule, params=list(func.params) + list(extra_params), prologue=prologue,
                            epilogue=lambda bb, r, env: bb.emit(relax.op.astype(r, out_dtype), "sim_out"))


@tvm.transform.module_pass(opt_level=0, name="tvm_fxp.Simulate")
class Simulate:
    """Lower annotations of ``main`` to exact float64 fake-quant."""

    def transform_module(self, mod: tvm.IRModule, ctx) -> tvm.IRModule:
        mod = map_relax_functions(mod, lambda f, name: simulate_function(f) if name == "main" else f)
        return relax.transform.DeadCodeElimination()(mod)
