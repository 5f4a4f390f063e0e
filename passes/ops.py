"""The ``fxp.annotate`` Relax op: a tensor carries a fixed-point format.

``fxp.annotate(x, bits, signed, frac, axis, name, multiplier, symmetric)``:

- ``bits``, ``signed`` (0/1), ``axis`` (-1 when per-tensor), ``symmetric`` (0/1: ``qmin = -qmax``): prim values;
- ``frac``: an int64 constant, a scalar (per-tensor) or a vector of one ``frac`` per channel along ``axis``;
- ``name``: the plan key of the tensor (``conv2d_0.weight``, ``add_1.output``, ``input``...);
- ``multiplier``: an int64 vector of one integer multiplier per channel (clusters of filters sharing a scale
  ``m * 2**-f``, Mellempudi et al.), empty when the format has none.

It is the identity on ``x``'s type.  It has no lowering of its own: ``Simulate`` turns it into fake-quant
in float64, ``Realize`` into integer tensors.  Compiling an annotated module directly is an error.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax
from tvm.ir import _ffi_api as _ir_ffi

from tvm_fxp.formats import FixedPointFormat

from .relax_utils import FxpGraphError, const_np, op_name

ANNOTATE = "fxp.annotate"


def _register() -> None:
    if ANNOTATE in [str(n) for n in _ir_ffi.ListOpNames()]:
        return
    _ir_ffi.RegisterOp(ANNOTATE, "A tensor carries a fixed-point format (tvm-fxp).")
    tvm.ir.register_op_attr(ANNOTATE, "FInferType", lambda call, ctx: call.args[0].ty)
    tvm.ir.register_op_attr(ANNOTATE, "FPurity", True)

    def _no_legalize(bb, call):
        raise FxpGraphError(
            f"fxp.annotate({call.args[5].value}) reached LegalizeOps: run tvm_fxp.passes.Simulate() or "
            "tvm_fxp.passes.Realize() after Annotate(plan), before building")

    from tvm.relax.transform.legalize_ops.common import register_legalize

    register_legalize(ANNOTATE, _no_legalize)


_register()


def annotate(x, fmt: FixedPointFormat, name: str):
    frac = np.asarray(fmt.frac_list if fmt.per_channel else fmt.frac, dtype="int64")
    return relax.Call(tvm.ir.Op.get(ANNOTATE), [
        x,
        relax.prim_value(fmt.bits),
        relax.prim_value(int(fmt.signed)),
        relax.const(frac, "int64"),
        relax.prim_value(-1 if fmt.axis is None else int(fmt.axis)),
        tvm.ir.StringImm(name),
        relax.const(np.asarray(fmt.multiplier or (), dtype="int64"), "int64"),
        relax.prim_value(int(fmt.symmetric)),
    ])


def is_annotate(expr) -> bool:
    return op_name(expr) == ANNOTATE


def annotation_format(call) -> tuple[FixedPointFormat, str]:
    """The format and tensor name carried by an ``fxp.annotate`` call."""
    bits = int(call.args[1].value)
    signed = bool(int(call.args[2].value))
    frac = const_np(call.args[3])
    axis = int(call.args[4].value)
    name = str(call.args[5].value)
    mult = tuple(int(m) for m in const_np(call.args[6])) if len(call.args) > 6 else ()
    symmetric = bool(int(call.args[7].value)) if len(call.args) > 7 else False
    if frac.ndim == 0:
        return FixedPointFormat(bits, int(frac), signed, symmetric=symmetric), name
    return FixedPointFormat(bits, tuple(int(f) for f in frac), signed, axis, mult or None, symmetric), name
