"""FoldConstantsNumpy: fold constant subgraphs in numpy.

Runs in ``Prepare``, before ``relax.transform.FoldConstant``: the constant subgraphs exporters and the importer
leave (batch-norm statistics, reshaped or transposed weights, clip bounds) are evaluated in numpy, where
``FoldConstant`` would compile every such op with LLVM (seconds per model).  Anything not handled here is left
to it.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax
from tvm.relax.expr_functor import PyExprMutator, mutator

from .relax_utils import const_np, is_const, main_bindings, op_name


def _shape_values(e) -> list | None:
    if isinstance(e, relax.ShapeExpr) and all(isinstance(v, tvm.tirx.IntImm) for v in e.values):
        return [int(v.value) for v in e.values]
    return None


def _axes(a):
    return None if a is None else [int(v) for v in a]


_NUMPY_BINARY = {"relax.add": np.add, "relax.subtract": np.subtract, "relax.multiply": np.multiply,
                 "relax.divide": np.divide, "relax.power": np.power, "relax.maximum": np.maximum,
                 "relax.minimum": np.minimum}
_NUMPY_UNARY = {"relax.sqrt": np.sqrt, "relax.rsqrt": lambda v: 1 / np.sqrt(v), "relax.negative": np.negative,
                "relax.exp": np.exp, "relax.isnan": np.isnan}


def _fold_call(value, known: dict):
    """The numpy value of a call whose tensor operands are all constant (``known``: var -> array of vars
    folded already), or None (leave it to TVM)."""
    name = op_name(value)
    if name is None or not value.args:
        return None

    def arr(e):
        if is_const(e):
            return const_np(e)
        return known.get(e) if isinstance(e, relax.Var) else None

    args = value.args
    a = arr(args[0])
    if a is None or not isinstance(value.ty, relax.TensorType):
        return None
    with np.errstate(all="ignore"):
        if name in _NUMPY_BINARY and len(args) == 2 and arr(args[1]) is not None:
            r = _NUMPY_BINARY[name](a, arr(args[1]))
        elif name in _NUMPY_UNARY:
            r = _NUMPY_UNARY[name](a)
        elif name == "relax.where" and all(arr(x) is not None for x in args):
            r = np.where(a, arr(args[1]), arr(args[2]))
        elif name == "relax.expand_dims":
            r = np.expand_dims(a, tuple(_axes(value.attrs.axis)))
        elif name == "relax.squeeze":
            axes = _axes(value.attrs.axis)
            r = np.squeeze(a, None if axes is None else tuple(axes))
        elif name == "relax.permute_dims":
            r = np.transpose(a, _axes(value.attrs.axes))
        elif name in ("relax.reshape", "relax.broadcast_to") and _shape_values(args[1]) is not None:
            shape = _shape_values(args[1])
            r = a.reshape(shape) if name == "relax.reshape" else np.broadcast_to(a, shape)
        elif name == "relax.astype":
            r = a
        else:
            return None
    r = np.array(r, dtype=str(value.ty.dtype), order="C")
    if value.ty.shape is None or list(r.shape) != [int(d) if isinstance(d, tvm.tirx.IntImm) else -1
                                                   for d in value.ty.shape]:
        return None
    return r


@mutator
class _NumpyFolder(PyExprMutator):
    """Rebinds every var of ``known`` (var -> numpy value) to its constant."""

    def __init__(self, mod, known: dict):
        super().__init__(mod)
        self.known = known

    def visit_var_binding_(self, binding: relax.VarBinding) -> None:
        r = self.known.get(binding.var)
        if r is not None:
            binding = relax.VarBinding(binding.var, relax.const(r, str(r.dtype)))
        super().visit_var_binding_(binding)


@relax.transform.function_pass(opt_level=0, name="tvm_fxp.FoldConstantsNumpy")
class FoldConstantsNumpy:
    """Fold the constant subgraphs exporters and the importer leave (batch-norm statistics, reshaped or
    transposed weights, clip bounds) in numpy: ``relax.transform.FoldConstant`` compiles every such op with
    LLVM, seconds per model.  Anything not handled here is left to it."""

    def transform_function(self, func: relax.Function, mod: tvm.IRModule, ctx) -> relax.Function:
        known: dict = {}
        for b in main_bindings(func):
            r = _fold_call(b.value, known)
            if r is not None:
                known[b.var] = r
        return _NumpyFolder(mod, known).visit_expr(func) if known else func
