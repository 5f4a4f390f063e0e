"""Calibration: run the float model in TVM with every activation exposed and collect streaming statistics.

Memory is bounded by one batch: each batch's activations update running statistics and are dropped.
Statistics per tensor: count, min, max, mean, std, abs-max and a histogram of ``log2 |x|`` (fixed bins, so
it streams without knowing the range first), plus per-channel abs-max.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import tvm_ffi
import tvm
from tvm import relax
from tqdm.auto import tqdm

HIST_LO, HIST_HI, HIST_PER_OCTAVE = -32, 32, 4
HIST_EDGES = np.linspace(HIST_LO, HIST_HI, (HIST_HI - HIST_LO) * HIST_PER_OCTAVE + 1)


@tvm_ffi.register_error
class CalibrationError(ValueError):
    pass


@dataclass
class TensorStats:
    count: int = 0
    total: float = 0.0
    total_sq: float = 0.0
    min: float = np.inf
    max: float = -np.inf
    zeros: int = 0
    hist: np.ndarray = field(default_factory=lambda: np.zeros(len(HIST_EDGES) - 1, dtype=np.int64))
    channel_abs_max: np.ndarray | None = None

    def update(self, x: np.ndarray, channel_axis: int | None = 1) -> None:
        x64 = x.astype(np.float64, copy=False)
        self.count += x64.size
        self.total += float(x64.sum())
        self.total_sq += float(np.square(x64).sum())
        self.min = min(self.min, float(x64.min()))
        self.max = max(self.max, float(x64.max()))
        a = np.abs(x64)
        nz = a[a > 0]
        self.zeros += int(a.size - nz.size)
        self.hist += np.histogram(np.log2(nz), bins=HIST_EDGES)[0]
        if channel_axis is not None and x.ndim > 1:
            cam = np.moveaxis(a, channel_axis, 0).reshape(a.shape[channel_axis], -1).max(axis=1)
            self.channel_abs_max = cam if self.channel_abs_max is None else np.maximum(self.channel_abs_max, cam)

    @property
    def abs_max(self) -> float:
        return max(abs(self.min), abs(self.max))

    @property
    def mean(self) -> float:
        return self.total / max(self.count, 1)

    @property
    def std(self) -> float:
        return float(np.sqrt(max(self.total_sq / max(self.count, 1) - self.mean ** 2, 0.0)))

    @classmethod
    def of(cls, x: np.ndarray, channel_axis: int | None = None) -> "TensorStats":
        s = cls()
        s.update(np.asarray(x), channel_axis)
        return s

    def to_json(self) -> dict:
        return {"count": self.count, "min": self.min, "max": self.max, "mean": self.mean, "std": self.std,
                "abs_max": self.abs_max}


def probe_module(prepared: tvm.IRModule, lg) -> tvm.IRModule:
    """``main`` returning the tuple of every layer output (the activations the plan formats), in order."""
    from tvm_fxp.passes._ir import rebuild_function, remap_expr

    outs = [layer.tail for layer in lg.layers.values()]
    new = rebuild_function(prepared["main"], lambda bb, b, v, env: v,
                           epilogue=lambda bb, r, env: relax.Tuple([remap_expr(o, env) for o in outs]))
    return tvm.IRModule({"main": new})


def check_batch(x: np.ndarray, where: str) -> np.ndarray:
    x = np.asarray(x)
    if x.size == 0:
        raise CalibrationError(f"{where} is empty; give at least one input")
    if not np.issubdtype(x.dtype, np.number):
        raise CalibrationError(f"{where}: calibration data has dtype {x.dtype}, expected numbers")
    bad = ~np.isfinite(x)
    if bad.any():
        idx = tuple(int(i) for i in np.argwhere(bad)[0])
        raise CalibrationError(f"{where} contains NaN/inf (first at index {idx}); "
                               "clean or drop those samples")
    return x.astype(np.float32, copy=False)


def calibrate(prepared: tvm.IRModule, lg, inputs: np.ndarray, batch_size: int = 64, target=None,
              progress: bool = True) -> dict:
    """Statistics ``{plan key: TensorStats}`` for every activation of ``lg`` over ``inputs`` (a list of arrays,
    one per model input, for a model with several inputs)."""
    arrays = [check_batch(a, f"calibration data (input {i})") for i, a in enumerate(inputs)] \
        if isinstance(inputs, (list, tuple)) else [check_batch(inputs, "calibration data")]
    if len({len(a) for a in arrays}) != 1:
        raise CalibrationError(f"calibration data: the inputs have different numbers of samples "
                               f"{[len(a) for a in arrays]}")
    from .api import build

    ex = build(probe_module(prepared, lg), target)
    vm = relax.VirtualMachine(ex, tvm.cpu())
    keys = [layer.output_key for layer in lg.layers.values()]
    stats = {k: TensorStats() for k in keys}
    n = len(arrays[0])
    for start in tqdm(range(0, n, batch_size), desc="calibrate", unit="batch", disable=not progress):
        outs = vm["main"](*[tvm.runtime.tensor(np.ascontiguousarray(a[start:start + batch_size])) for a in arrays])
        for k, o in zip(keys, outs):
            a = o.numpy()
            if not np.all(np.isfinite(a)):
                raise CalibrationError(f"activation {k} is NaN/inf on calibration batch starting at {start}: "
                                       "check the model's weights (NaN/inf initializers?)")
            stats[k].update(a, channel_axis=1 if a.ndim > 1 else None)
    return stats
