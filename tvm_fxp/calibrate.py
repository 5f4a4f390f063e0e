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
from .runtime import Runner, build, model_batch
from .statistics import HIST_EDGES, CalibrationError, TensorStats, accumulate, check_batch  # noqa: F401


def probe_module(prepared: tvm.IRModule, lg) -> tvm.IRModule:
    """``main`` returning the tuple of every layer output (the activations the plan formats), in order."""
    outs = [layer.tail for layer in lg.layers.values()]
    new = rebuild_function(prepared["main"], lambda bb, b, v, env: v,
                           epilogue=lambda bb, r, env: relax.Tuple([remap_expr(o, env) for o in outs]))
    return tvm.IRModule({"main": new})


def calibrate(prepared: tvm.IRModule, lg, inputs, batch_size: int = 64, target=None,
              progress: bool = True) -> dict:
    """Statistics ``{plan key: TensorStats}`` for every activation of ``lg`` over ``inputs`` (a list of arrays,
    one per model input, for a model with several inputs).

    ``inputs``: an array (or a lazily decoded image folder, each chunk checked as it is decoded); a model with a
    fixed batch runs in chunks of its batch (the last one padded, the padding never counted), a dynamic one in
    chunks of ``batch_size``.
    """
    several = isinstance(inputs, (list, tuple))      # one array per model input
    lazy = not several and not isinstance(inputs, np.ndarray) and hasattr(inputs, "__getitem__")
    if several:
        inputs = [check_batch(a, f"calibration data (input {i})") for i, a in enumerate(inputs)]
        if len({len(a) for a in inputs}) != 1:
            raise CalibrationError(f"calibration data: the inputs have different numbers of samples "
                                   f"{[len(a) for a in inputs]}")
    elif not lazy:
        inputs = check_batch(inputs, "calibration data")
    elif len(inputs) == 0:
        raise CalibrationError("calibration data is empty; give at least one input")
    batch = model_batch(prepared)
    runner = Runner(build(probe_module(prepared, lg), target), batch=batch)
    keys = [layer.output_key for layer in lg.layers.values()]
    chunk = batch or batch_size
    batches = tqdm(runner.batches(_checked(inputs) if lazy else inputs, batch_size),
                   total=math.ceil(len(inputs[0] if several else inputs) / chunk), desc="calibrate", unit="batch", disable=not progress)
    return accumulate(keys, batches)


class _checked:
    """A lazily decoded input set whose chunks are checked (NaN/inf, dtype) as they are sliced."""

    def __init__(self, inputs):
        self.inputs = inputs

    def __len__(self):
        return len(self.inputs)

    def __getitem__(self, idx):
        x = self.inputs[idx]
        return check_batch(x, f"calibration inputs {idx.start}..{idx.stop - 1}") if isinstance(idx, slice) else x
