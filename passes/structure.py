"""Structural checks on a realized module: no float op between the input quantize and the output dequantize.

The only float computation allowed in an integer graph is

- the *input quantize*: float ops whose operands come only from the function parameters (and constants),
  limited to the quantizer's own ops (cast, scale, abs, round-half-away pieces, clip), ending in a cast to
  an integer type;
- the *output dequantize*: a cast from an integer tensor to float followed by scalings by constants, whose
  result is what the function returns;
- the *epilogue* after the output dequantize: a softmax/log-softmax (and layout ops) on the dequantized
  output, computed in float32 exactly as the simulation computes it (``analysis.EPILOGUE``).

Anything else that produces or consumes a float tensor is reported.
"""

from __future__ import annotations

from tvm import relax

from .relax_utils import is_const, main_bindings, op_name
from .analysis import EPILOGUE

_QUANTIZE_OPS = {"relax.astype", "relax.multiply", "relax.abs", "relax.add", "relax.floor", "relax.sign",
                 "relax.clip", "relax.maximum", "relax.minimum"}
_DEQUANTIZE_OPS = {"relax.astype", "relax.multiply"}
_EPILOGUE_OPS = set(EPILOGUE) | {"relax.reshape", "relax.flatten", "relax.squeeze", "relax.permute_dims",
                                 "relax.expand_dims"}


def _is_float(dtype: str) -> bool:
    return dtype.startswith("float") or dtype.startswith("bfloat")


def float_ops_in_integer_graph(mod) -> list:
    """``[(var name, op, dtype)]`` of every float op outside input quantize / output dequantize."""
    func = mod["main"]
    region: dict = {p: "input" for p in func.params}   # var -> input | int | output
    bad = []
    for b in main_bindings(func):
        e = b.value
        dtype = str(b.var.ty.dtype) if isinstance(b.var.ty, relax.TensorType) else ""
        if isinstance(e, relax.Var):
            region[b.var] = region.get(e, "int")
            continue
        name = op_name(e) or type(e).__name__
        args = []
        for a in getattr(e, "args", []):
            args.extend(a.fields if isinstance(a, relax.Tuple) else [a])
        in_regions = {region.get(a, "int") for a in args if isinstance(a, relax.Var)}
        consts_float = [a for a in args if is_const(a) and _is_float(str(a.ty.dtype))]
        if in_regions <= {"input"} and name in _QUANTIZE_OPS:
            region[b.var] = "input" if _is_float(dtype) else "int"
            continue
        if name in _DEQUANTIZE_OPS and (in_regions == {"output"} or (
                name == "relax.astype" and in_regions == {"int"} and _is_float(dtype))):
            if name == "relax.multiply" and len(consts_float) != 1:
                bad.append((b.var.name, name, dtype))
            region[b.var] = "output"
            continue
        if name in _EPILOGUE_OPS and in_regions == {"output"}:
            region[b.var] = "output"
            continue
        if _is_float(dtype) or "input" in in_regions or "output" in in_regions or consts_float:
            bad.append((b.var.name, name, dtype))
        region[b.var] = "int"
    result = func.body.body
    if region.get(result) == "int" and isinstance(result.ty, relax.TensorType) and _is_float(str(result.ty.dtype)):
        bad.append((result.name, "result", str(result.ty.dtype)))
    return bad
