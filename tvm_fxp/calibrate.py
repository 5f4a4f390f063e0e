"""Calibration: run the float model in TVM with every activation exposed and collect streaming statistics.

The statistics themselves (``TensorStats``, bounded memory: one batch at a time) are ``tvm_fxp.statistics``;
this module builds the probe (``main`` returning every layer output) and runs it over the inputs.
"""

from __future__ import annotations

import math

import numpy as np
import tvm
from tvm import relax
from tvm.relax.expr_functor import PyExprMutator, mutator
from tqdm.auto import tqdm

from .runtime import Runner, build, model_batch
from .statistics import HIST_EDGES, CalibrationError, TensorStats, accumulate, check_batch  # noqa: F401


@mutator
class _Probe(PyExprMutator):
    """``main`` returning the tuple of ``tails`` (bound as a dataflow output right after the result)."""

    def __init__(self, func: relax.Function, tails: list):
        super().__init__()
        self.result, self.tails, self.probe = func.body.body, tails, None

    def visit_var_binding_(self, binding: relax.VarBinding) -> None:
        super().visit_var_binding_(binding)
        if binding.var.same_as(self.result):
            self.probe = self.builder_.emit_output(relax.Tuple([self.visit_expr(t) for t in self.tails]), "probe")

    def visit_function_(self, func: relax.Function) -> relax.Expr:
        out = super().visit_function_(func)
        if self.probe is None:
            raise ValueError("main's result is not bound in its body (run relax.transform.Normalize)")
        body = self.builder_.normalize(relax.SeqExpr(out.body.blocks, self.probe))
        return relax.Function(out.params, body, None, out.is_pure, out.attrs)


def probe_module(prepared: tvm.IRModule, lg) -> tvm.IRModule:
    """``main`` returning the tuple of every layer output (the activations the plan formats), in order."""
    func = prepared["main"]
    return tvm.IRModule({"main": _Probe(func, [layer.tail for layer in lg.layers.values()]).visit_expr(func)})


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
