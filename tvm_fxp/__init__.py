"""tvm-fxp: fixed-point quantization for Apache TVM (Relax + TIR).

The core (formats, plan, bounds, statistics, metrics, costs, the layer graph and the allocation methods) is
TVM-free; importing ``tvm_fxp`` loads only it.  The face (``quantize``, ``build``, ``Runner``, ...), the passes
(``tvm_fxp.passes``) and the kernels (``tvm_fxp.schedules``) load TVM when first used, and importing any of
them changes no global TVM state: our kernels are used through ``tvm_fxp.schedules.pipeline(target)``
(what ``tvm_fxp.build`` compiles with) or after an explicit ``tvm_fxp.schedules.register()``.
"""

import importlib

from .formats import FixedPointFormat, FormatError
from .methods import Uniform
from .plan import Plan, PlanError

__version__ = "0.1.0"
__all__ = ["FixedPointFormat", "FormatError", "ModelError", "Plan", "PlanError", "Quantized", "Runner",
           "Uniform", "bind_plan", "build", "import_onnx", "load_model", "model_batch", "prepare", "quantize"]

_FACE = {"ModelError": "api", "Quantized": "api", "bind_plan": "api", "import_onnx": "api", "load_model": "api",
         "prepare": "api", "quantize": "api", "Runner": "runtime", "build": "runtime", "model_batch": "runtime"}
_SUBMODULES = {"api", "batching", "bounds", "calibrate", "cli", "costs", "datasets", "layer_graph", "metrics", "passes",
               "images", "report", "runtime", "schedules", "statistics"}


def __getattr__(name):
    """The face's names and the subpackages, imported on first use (they load TVM)."""
    if name in _FACE:
        return getattr(importlib.import_module(f".{_FACE[name]}", __name__), name)
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
