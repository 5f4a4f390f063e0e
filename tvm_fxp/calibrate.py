"""Calibration: run the float model in TVM with every activation exposed and collect streaming statistics.

The statistics themselves (``TensorStats``, bounded memory: one batch at a time) are ``tvm_fxp.statistics``;
this module builds the probe (``main`` returning every layer output) and runs it over the inputs.
"""

from __future__ import annotations

import math

import numpy as np
import tvm
from tvm import relax
from tqdm.auto import tqdm

from .passes.relax_utils import rebuild_function, remap_expr
from .runtime import Runner, build
from .statistics import HIST_EDGES, CalibrationError, TensorStats, accumulate, check_batch  # noqa: F401


def probe_module(prepared: tvm.IRModule, lg) -> tvm.IRModule:
    """``main`` returning the tuple of every layer output (the activations the plan formats), in order."""
    outs = [layer.tail for layer in lg.layers.values()]
    new = rebuild_function(prepared["main"], lambda bb, b, v, env: v,
                           epilogue=lambda bb, r, env: relax.Tuple([remap_expr(o, env) for o in outs]))
    return tvm.IRModule({"main": new})


def calibrate(prepared: tvm.IRModule, lg, inputs: np.ndarray, batch_size: int = 64, target=None,
              progress: bool = True) -> dict:
    """Statistics ``{plan key: TensorStats}`` for every activation of ``lg`` over ``inputs``."""
    inputs = check_batch(inputs, "calibration data")
    runner = Runner(build(probe_module(prepared, lg), target))
    keys = [layer.output_key for layer in lg.layers.values()]
    batches = tqdm(runner.batches(inputs, batch_size), total=math.ceil(len(inputs) / batch_size), desc="calibrate",
                   unit="batch", disable=not progress)
    return accumulate(keys, batches)
