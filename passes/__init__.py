"""tvm-fxp's Relax passes, in pipeline order: Prepare -> Annotate(plan) -> Simulate | Realize.

Each is an ordinary ``tvm.transform.Pass`` and composes in ``tvm.transform.Sequential``.
"""

from .analysis import LayerGraph, allow_float_islands, analyze, float_islands
from .annotate import Annotate, validate_plan
from .ops import ANNOTATE, annotate
from .prepare import FoldAffineIntoLayers, Prepare
from .realize import Realize
from .simulate import Simulate
from .structure import float_ops_in_integer_graph
from .relax_utils import FxpGraphError
from . import resize as _resize  # noqa: F401 -- registers the linear-resize layer arithmetic (tvm_fxp.bounds)

__all__ = ["ANNOTATE", "Annotate", "allow_float_islands", "float_islands", "FoldAffineIntoLayers", "FxpGraphError", "LayerGraph", "Prepare", "Realize",
           "Simulate", "analyze", "annotate", "float_ops_in_integer_graph", "validate_plan"]
