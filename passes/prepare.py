"""Prepare a float Relax module for quantization: fold batch-norm and constants, canonicalise.

Must run before ``Annotate``, on a module straight from the ONNX importer (or any Relax module in NCHW
with constant weights).  After it:

- batch-norm, and any chain of per-channel ``add``/``subtract``/``multiply``/``divide`` by constants that
  follows a conv2d or matmul with constant weights, is folded into that layer's weights and one bias, so
  every weighted layer reads ``add(conv2d(x, W), b)`` / ``add(matmul(x, W), b)``;
- constant subgraphs (transposed Gemm weights, reshaped biases) are folded;
- inference-only decompositions are applied (batch-norm in inference mode, dropout removed) and dead code is
  eliminated;
- ONNX ``Sum`` (imported as ``sum(stack(broadcast_to(a), ...))``) becomes a chain of ``add`` (one n-ary
  residual add for the layer graph);
- a multiply/divide by a positive scalar constant is moved towards its producer through ``clip``/``relu``/
  max pool/layout ops and onto one operand of a product of two tensors (``clip(x + 3, 0, 6) / 6`` becomes
  ``clip(x / 6 + 0.5, 0, 1)``), so it can join an affine chain;
- a per-channel (or scalar) affine chain on an activation that follows no conv/matmul it could fold into
  (batch-norm after a concat, ``x + 3`` of hard-swish, input normalisation) becomes a depthwise 1x1 conv2d
  with a bias: a scale and a shift per channel, whose formats the plan chooses like any other layer's.

Each of our steps is one pass in its own module, named as TVM names its passes: ``FoldConstantsNumpy``
(``fold_constants_numpy.py``), ``CanonicalizeClip``, ``RemoveDropout``, ``CanonicalizeSum``,
``PushScalarMultiplies``, ``FoldAffineIntoLayers``, ``AffineToDepthwise``; ``Prepare()`` sequences them with
TVM's own (``DecomposeOpsForInference``, ``FoldConstant``, ``CanonicalizeBindings``, ``DeadCodeElimination``).

The local response normalisation the ONNX importer decomposes (``x / (k + a/n * sum x^2)^b``) is left as it
is; ``analysis`` recognises it as one ``lrn`` layer and the affine passes do not touch its inner ops.
"""

from __future__ import annotations

import tvm
from tvm import relax

from .affine_to_depthwise import AffineToDepthwise
from .canonicalize_clip import CanonicalizeClip
from .canonicalize_sum import CanonicalizeSum
from .fold_affine_into_layers import FoldAffineIntoLayers
from .fold_constants_numpy import FoldConstantsNumpy
from .push_scalar_multiplies import PushScalarMultiplies
from .relax_utils import FxpGraphError, main_bindings, op_name
from .remove_dropout import RemoveDropout

__all__ = ["AffineToDepthwise", "CanonicalizeClip", "CanonicalizeSum", "FoldAffineIntoLayers", "FoldConstantsNumpy",
           "Prepare", "PushScalarMultiplies", "RemoveDropout"]


def _check_graph(mod: tvm.IRModule) -> tvm.IRModule:
    for gv, func in mod.functions.items():
        if not isinstance(func, relax.Function):
            continue
        for b in main_bindings(func):
            if op_name(b.value) == "relax.nn.batch_norm":
                raise FxpGraphError(f"{gv.name_hint}/{b.var.name}: batch_norm could not be decomposed; "
                                    "export the model in inference mode (model.eval())")
    return mod


def _check_resizes(mod: tvm.IRModule) -> tvm.IRModule:
    """TVM's ``resize2d`` divides by ``out - 1`` for ``align_corners``: refuse an output axis of one pixel by name
    (before ``FoldConstant`` legalizes it and fails inside TOPI)."""
    for gv, func in mod.functions.items():
        if not isinstance(func, relax.Function):
            continue
        for b in main_bindings(func):
            e = b.value
            if op_name(e) == "relax.image.resize2d" and e.attrs.coordinate_transformation_mode == "align_corners" \
                    and e.attrs.method != "nearest_neighbor" and any(
                        isinstance(d, tvm.tirx.IntImm) and int(d) == 1 for d in list(b.var.ty.shape)[2:]):
                raise FxpGraphError(f"node {b.var.name} (relax.image.resize2d): align_corners {e.attrs.method} "
                                    "resize to an output of one pixel on an axis is not supported (TVM's resize2d "
                                    "divides by zero there); export another coordinate_transformation_mode or a "
                                    "larger output")
    return mod


def Prepare() -> tvm.transform.Pass:
    """The preparation pipeline (a ``tvm.transform.Sequential``): decompose, fold, clean up."""
    from .selection import CanonicalizeSelections

    return tvm.transform.Sequential([
        tvm.transform.module_pass(lambda m, c: _check_resizes(m), opt_level=0, name="tvm_fxp.CheckResizes"),
        relax.transform.DecomposeOpsForInference(),
        FoldConstantsNumpy(),
        relax.transform.FoldConstant(),
        CanonicalizeClip(),
        RemoveDropout(),
        CanonicalizeSum(),
        CanonicalizeSelections(),
        relax.transform.CanonicalizeBindings(),
        relax.transform.DeadCodeElimination(),
        PushScalarMultiplies(),
        FoldAffineIntoLayers(),
        AffineToDepthwise(),
        FoldConstantsNumpy(),
        relax.transform.FoldConstant(),
        relax.transform.CanonicalizeBindings(),
        relax.transform.DeadCodeElimination(),
        tvm.transform.module_pass(lambda m, c: _check_graph(m), opt_level=0, name="tvm_fxp.CheckPrepared"),
    ], name="tvm_fxp.Prepare")
