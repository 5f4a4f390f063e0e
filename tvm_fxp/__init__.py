"""tvm-fxp: fixed-point quantization for Apache TVM (Relax + TIR)."""

from .api import (ModelError, Quantized, Runner, bind_plan, build, import_onnx, load_model, model_batch, prepare,
                  quantize)
from . import schedules  # noqa: F401 -- registers the int8/int16 kernel legalization used by tvm.compile
from .formats import FixedPointFormat, FormatError
from .methods import Uniform
from .plan import Plan, PlanError

__version__ = "0.1.0"
__all__ = ["FixedPointFormat", "FormatError", "ModelError", "Plan", "PlanError", "Quantized", "Runner",
           "Uniform", "bind_plan", "build", "import_onnx", "load_model", "model_batch", "prepare", "quantize"]
