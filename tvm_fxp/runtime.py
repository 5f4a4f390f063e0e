"""Compile and run: ``build`` a Relax module for a target and run it over batches of inputs (``Runner``).

Calibration (``tvm_fxp.calibrate``), the plan scorer the searches use (``tvm_fxp.passes.plan_scorer``, handed
to the methods as an ``evaluate(plan)`` callback) and the CLI run their modules through here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tvm
from tvm import relax

from .batching import Batching, concat, padded_chunks, trim
from .passes.relax_utils import model_batch  # noqa: F401 -- tvm_fxp.model_batch


def host_target() -> tvm.target.Target:
    """LLVM for this machine's CPU (so LLVM may use its vector extensions)."""
    return tvm.target.Target({"kind": "llvm", "mcpu": tvm.target.codegen.llvm_get_system_cpu()})


def build(mod: tvm.IRModule, target=None):
    """Compile a (float, simulated or realized) module to a VM executable (default: the host CPU).

    On LLVM CPU targets the Relax pipeline is ``tvm_fxp.schedules.pipeline``: TVM's CPU pipeline with our
    integer kernels as the legalization of conv2d/matmul, the fusion of every integer conv2d/matmul with its
    requantize epilogue into one scheduled kernel, and vectorized elementwise kernels (same results, bit for
    bit).  Inside ``tvm_fxp.schedules.disabled()``, and on other targets, it is ``tvm.compile``'s default.
    """
    from .schedules import cpu_pipeline

    target = target or host_target()
    if isinstance(target, (str, dict)):
        target = tvm.target.Target(target)
    return cpu_pipeline.build(mod, target)


ALIGNMENT = 64     # bytes: TVM's kernels assume their buffers start on a 64-byte boundary


def aligned_empty(shape, dtype) -> np.ndarray:
    """An uninitialised C-contiguous numpy array whose data starts on a 64-byte boundary."""
    dtype = np.dtype(dtype)
    n = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    raw = np.empty(n + ALIGNMENT, np.uint8)
    start = (-raw.ctypes.data) % ALIGNMENT
    return raw[start:start + n].view(dtype).reshape(shape)


class Staging:
    """Input tensors for repeated calls on the CPU: one 64-byte aligned numpy buffer per (input, shape, dtype),
    shared with TVM through DLPack once, refilled by numpy's copy on each call.  Against a fresh
    ``tvm.runtime.tensor`` per call (allocate and copy: 18 us for a 28x28 image here) this costs well under a
    microsecond.  A staged tensor is overwritten by the next call with the same shape: use one ``Staging``
    per caller, and a call's outputs (fresh tensors) never alias it."""

    def __init__(self, device=None):
        self.device = device or tvm.cpu()
        self._cpu = self.device.dlpack_device_type() == tvm.cpu().dlpack_device_type()
        self._buffers: dict = {}

    def __call__(self, x, index: int = 0) -> tvm.runtime.Tensor:
        x = np.asarray(x)
        if not self._cpu:
            return tvm.runtime.tensor(x, self.device)
        key = (index, x.shape, x.dtype.str)
        staged = self._buffers.get(key)
        if staged is None:
            buf = aligned_empty(x.shape, x.dtype)
            try:
                staged = (buf, tvm.runtime.from_dlpack(buf))
            except (BufferError, ValueError, TypeError, RuntimeError):   # a dtype DLPack cannot carry
                return tvm.runtime.tensor(x, self.device)
            self._buffers[key] = staged
        np.copyto(staged[0], x)
        return staged[1]


def to_numpy(out):
    """A module's result as numpy: a CPU tensor is shared through DLPack (0.2 us vs 6 us for ``.numpy()``'s
    copy; the array keeps the tensor alive), a tuple of results as a list of arrays."""
    if isinstance(out, tvm.runtime.Tensor):
        try:
            return np.from_dlpack(out)
        except (BufferError, ValueError, TypeError, RuntimeError):
            return out.numpy()
    return [to_numpy(o) for o in out]


class Runner:
    """Run a compiled module over a batch of inputs, in chunks.

    ``batch``: the model's fixed batch size (``model_batch(mod)`` of the module that was built), None when the
    batch is dynamic; a fixed batch runs in chunks of exactly that size, the last one padded with copies of its
    last input and the padding trimmed from the outputs (``tvm_fxp.batching``).
    """

    def __init__(self, executable_or_path, device=None, batch: int | None = None):
        dev = device or tvm.cpu()
        ex = executable_or_path
        if isinstance(ex, (str, Path)):
            ex = tvm.runtime.load_module(str(ex))
        self.vm = relax.VirtualMachine(ex, dev)
        self.batch = batch
        self._stage = Staging(dev)

    def _call(self, xs: list):
        try:
            out = self.vm["main"](*[self._stage(x, i) for i, x in enumerate(xs)])
        except Exception as e:   # a fixed-batch module run without its batch size
            if "mismatch to specified constant" in str(e) and self.batch is None:
                raise ValueError(f"the module has a fixed batch size and got {len(xs[0])} inputs at once: build "
                                 "the Runner with batch=tvm_fxp.model_batch(mod) of the module you built") from None
            raise
        return to_numpy(out)

    def batches(self, inputs, batch_size: int = 256):
        """Yield ``(index of the chunk's first input, output)`` per chunk; a tuple result as a list of arrays.
        ``inputs``: an array, a lazily decoded image folder (sliced one chunk at a time), or a list of arrays,
        one per model input."""
        for start, stop, xs in padded_chunks(inputs, Batching(self.batch, batch_size)):
            yield start, trim(self._call(xs), stop - start, len(xs[0]))

    def run(self, inputs, batch_size: int = 256):
        """The outputs over ``inputs`` (a list of arrays for a model with several inputs); a model with several
        outputs returns a list of arrays, one per output."""
        return concat([out for _, out in self.batches(inputs, batch_size)])


def profile(executable_or_path, inputs, repeats: int = 3, device=None) -> list[dict]:
    """Time every kernel call of one inference (TVM 0.27's Relax VM has no profiler: a VM instrument runs
    each call ``repeats`` more times on its own arguments, timed with ``time.perf_counter``, and keeps the
    fastest).  ``inputs``: one batch (an array, or a list of arrays, one per model input).

    Returns one row per call, in execution order: ``kernel`` (the PrimFunc's symbol), ``ms``, ``shapes``
    (of every tensor argument; the last is the output).  Kernels write their outputs only, so running one
    again gives the same result.  Use ``layer_times`` to attribute the rows to the layers of a plan.  A small
    model built by ``build`` runs all its kernels as one call (``main_graph0``, ``schedules/graph.py``): build
    it inside ``tvm_fxp.schedules.per_kernel()`` to time its kernels one by one."""
    import time

    dev = device or tvm.cpu()
    ex = executable_or_path
    if isinstance(ex, (str, Path)):
        ex = tvm.runtime.load_module(str(ex))
    vm = relax.VirtualMachine(ex, dev)
    xs = [tvm.runtime.tensor(np.ascontiguousarray(x, dtype=np.float32), dev)
          for x in (inputs if isinstance(inputs, (list, tuple)) else [inputs])]
    vm["main"](*xs)     # warm up (allocations, caches)
    rows: list[dict] = []

    def instrument(func, symbol, before_run, _ret, *args):
        if not before_run or symbol.startswith("vm.builtin") or symbol.startswith("__"):
            return 0
        tensors = [a for a in args if isinstance(a, tvm.runtime.Tensor)]
        best = None
        for _ in range(max(1, repeats)):
            t0 = time.perf_counter()
            func(*args)
            t = time.perf_counter() - t0
            best = t if best is None else min(best, t)
        rows.append({"kernel": str(symbol), "ms": best * 1e3, "shapes": [tuple(int(s) for s in a.shape)
                                                                           for a in tensors]})
        return 0

    vm.set_instrument(instrument)
    vm["main"](*xs)
    vm.set_instrument(None)
    return rows


def cpu_ghz() -> float | None:
    """This CPU's nominal clock (GHz) from /proc/cpuinfo (``cpu MHz``), None when unknown."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("cpu MHz"):
                return float(line.split(":")[1]) / 1000
    except OSError:
        pass
    return None


def _output_size(layer_shape, kernel_shape) -> int:
    """Elements per image of a layer's output (``layer_shape``: ``(C, H, W)``) as its kernel writes them: NCHW,
    or blocked ``(N, C/16, H, W, 16)`` with the channels padded to 16 (``schedules/layout.py``)."""
    shape = [int(s) for s in layer_shape]
    if len(kernel_shape) == 5 and len(shape) == 3 and int(kernel_shape[-1]) == 16:
        shape[0] = -(-shape[0] // 16) * 16
    return int(np.prod(shape))


def layer_times(q, rows: list[dict], batch: int = 1) -> list[dict]:
    """Attribute ``profile`` rows to the weighted layers of ``q`` (a bound plan): each conv2d/matmul kernel
    call (``fxp_conv2d*``/``fxp_dense*``, in execution order) to the next weighted layer whose output has
    as many elements (``batch``: the images of the profiled batch); every other call (quantize, pools, residual adds, ...) is listed on its own.  Each row
    gets ``layer``, ``macs`` (weighted layers) and ``macs_per_cycle`` (at ``cpu_ghz()``)."""
    ghz = cpu_ghz()
    weighted = [layer for layer in q.graph.layers.values() if layer.weight is not None and layer.macs]
    out, k = [], 0
    for r in rows:
        row = dict(r, layer="-", macs=0, macs_per_cycle=None)
        if r["kernel"].startswith(("fxp_conv2d", "fxp_dense")) and "weight_pack" not in r["kernel"]:
            size = int(np.prod(r["shapes"][-1])) if r["shapes"] else -1
            for j in range(k, len(weighted)):
                if _output_size(weighted[j].out_shape, r["shapes"][-1] if r["shapes"] else ()) * batch == size:
                    row.update(layer=weighted[j].name, macs=int(weighted[j].macs) * batch)
                    k = j + 1
                    break
        if row["macs"] and ghz and r["ms"] > 0:
            row["macs_per_cycle"] = row["macs"] / (r["ms"] * 1e-3 * ghz * 1e9)
        out.append(row)
    return out
