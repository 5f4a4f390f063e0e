"""The Python API: import, prepare, calibrate, allocate, annotate, simulate, realize, build, run.

    import tvm_fxp
    q = tvm_fxp.quantize("model.onnx", calib_images, method=tvm_fxp.Uniform(bits=8))
    ex = tvm_fxp.build(q.realized())          # integer-only module
    logits = tvm_fxp.Runner(ex).run(images)

Each step is also a plain Relax pass (``tvm_fxp.passes``) for users who assemble their own pipeline.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import tvm
from tvm import relax

from .calibrate import CalibrationError, TensorStats, calibrate, check_batch
from .methods import get_method
from .plan import Plan, PlanError


class ModelError(ValueError):
    """The model file cannot be used; the message names the file/node and what to do."""


IMPORT_OPSET = 13   # older models are converted to this opset before import (TVM's importer targets it)


def _dims(value_info) -> list | None:
    """Dims of a graph input: ints, or the symbolic name (``'?'`` when unnamed); None when the rank is unknown."""
    t = value_info.type.tensor_type
    if not t.HasField("shape"):
        return None
    return [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else (d.dim_param or "?") for d in t.shape.dim]


def _fix_input_shape(model, p, input_shape):
    """Check the graph inputs have static non-batch dims, or make them static from ``input_shape``.

    The batch dimension stays as the model has it (symbolic in exported CNNs, so any batch size runs); every
    other dimension must be static: from the model, or given by ``input_shape`` (batch entry ignored when the
    model's batch is symbolic).  Raises ModelError naming the dynamic input otherwise.
    """
    init_names = {i.name for i in model.graph.initializer}
    graph_inputs = [i for i in model.graph.input if i.name not in init_names]
    if input_shape is not None:
        if len(graph_inputs) != 1:
            raise ModelError(f"{p}: input_shape given but the model has {len(graph_inputs)} inputs")
        want = [int(s) for s in input_shape]
        inp = graph_inputs[0]
        dims = _dims(inp)
        if dims is not None and len(dims) != len(want):
            raise ModelError(f"{p}: input {inp.name!r} has rank {len(dims)} ({dims}), but input_shape "
                             f"{want} has rank {len(want)}")
        if dims is not None:
            clash = [i for i, (d, w) in enumerate(zip(dims, want)) if i > 0 and isinstance(d, int) and d != w]
            if clash:
                raise ModelError(f"{p}: input_shape {want} disagrees with input {inp.name!r} {dims} at dims "
                                 f"{clash}")
        shape = inp.type.tensor_type.shape
        if dims is None:
            for w in want:
                shape.dim.add().dim_value = w
        for i, d in enumerate(shape.dim):
            if i > 0 or d.HasField("dim_value"):
                d.dim_value = want[i]
            elif not d.dim_param:
                d.dim_param = "N"
    for inp in graph_inputs:
        dims = _dims(inp)
        if dims is None:
            raise ModelError(f"{p}: input {inp.name!r} has an unknown rank; give its shape with input_shape= "
                             "(CLI --input-shape, e.g. 1,3,224,224)")
        dyn = [f"dim {i} ({d})" for i, d in enumerate(dims) if i > 0 and not isinstance(d, int)]
        if dyn:
            raise ModelError(f"{p}: input {inp.name!r} {dims} has dynamic dimensions besides the batch: "
                             f"{', '.join(dyn)}; give a static shape with input_shape= (CLI --input-shape, "
                             f"e.g. 1,{','.join(str(d) if isinstance(d, int) else 'H' for d in dims[1:])})")
    return model


def _upgrade_opset(model):
    """Old models (opset < 13) converted to opset 13 with ONNX's version converter, which rewrites the
    attribute forms TVM's importer does not implement (``Slice`` before 10, ``Clip`` before 11); the model as
    it is when the conversion fails."""
    import onnx

    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), IMPORT_OPSET)
    if opset >= IMPORT_OPSET:
        return model
    try:
        return onnx.version_converter.convert_version(model, IMPORT_OPSET)
    except Exception:
        return model


def _unsupported_nodes(model, message: str) -> str:
    names = [f"{n.name or n.output[0]!r} ({n.op_type})" for n in model.graph.node
             if n.op_type in message.replace(",", " ").split()]
    return f"; nodes {', '.join(names[:5])}{' ...' if len(names) > 5 else ''}" if names else ""


def import_onnx(path, input_shape=None) -> tvm.IRModule:
    """Load an ONNX file into Relax (weights as constants), with clear errors for bad files.

    ``input_shape`` (e.g. ``[1, 3, 224, 224]``) fixes the input's non-batch dimensions; it is required when
    the model leaves them dynamic.  The batch dimension stays symbolic when the model has it so.
    """
    import onnx
    from tvm.relax.frontend.onnx import from_onnx

    p = Path(path)
    if not p.exists():
        raise ModelError(f"model file {p} does not exist")
    try:
        model = onnx.load(str(p))
    except Exception as e:  # protobuf DecodeError and friends
        raise ModelError(f"model file {p} is not a valid ONNX model (truncated or corrupt?): {e}") from None
    if not model.graph.node:
        raise ModelError(f"model file {p} has an empty graph (not an ONNX model, or truncated)")
    model = _fix_input_shape(model, p, input_shape)
    try:
        onnx.checker.check_model(model)
    except Exception as e:
        raise ModelError(f"model file {p} fails the ONNX checker: {str(e).splitlines()[0]}") from None
    for t in model.graph.initializer:
        arr = onnx.numpy_helper.to_array(t)
        if np.issubdtype(arr.dtype, np.floating) and not np.all(np.isfinite(arr)):
            raise ModelError(f"{p}: initializer {t.name!r} contains NaN/inf; fix the exported weights")
    for n in model.graph.node:
        if n.op_type == "Constant":
            for a in n.attribute:
                if a.type == onnx.AttributeProto.TENSOR:
                    arr = onnx.numpy_helper.to_array(a.t)
                    if np.issubdtype(arr.dtype, np.floating) and not np.all(np.isfinite(arr)):
                        raise ModelError(f"{p}: Constant node {n.name or n.output[0]!r} contains NaN/inf; fix the "
                                         "exported weights")
    model = _upgrade_opset(model)
    try:
        mod = from_onnx(model, keep_params_in_input=False)
    except Exception as e:
        msg = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
        raise ModelError(f"{p}: TVM's ONNX importer failed: {msg}{_unsupported_nodes(model, msg)}") from None
    return mod


def model_digest(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def prepare(mod: tvm.IRModule) -> tvm.IRModule:
    from .passes import Prepare

    return Prepare()(mod)


@dataclass
class Quantized:
    """A prepared float module, its layer graph, calibration statistics and the chosen plan."""

    prepared: tvm.IRModule
    graph: object                    # tvm_fxp.passes.analysis.LayerGraph
    plan: Plan
    stats: dict = field(default_factory=dict)
    arithmetic: dict = field(default_factory=dict)

    def annotated(self) -> tvm.IRModule:
        from .passes import Annotate

        return Annotate(self.plan)(self.prepared)

    def simulated(self) -> tvm.IRModule:
        from .passes import Simulate

        return Simulate()(self.annotated())

    def realized(self, accumulator: str = "wide") -> tvm.IRModule:
        from .passes import Realize

        return Realize(accumulator)(self.annotated())

    def with_plan(self, plan: Plan) -> "Quantized":
        return bind_plan(self.prepared, self.graph, plan, self.stats)


def bind_plan(prepared, lg, plan: Plan, stats=None) -> Quantized:
    """Validate ``plan`` against the model and fill its informative ``layers`` section."""
    from .passes.annotate import validate_plan

    arith = validate_plan(lg, plan)
    layers = {}
    for layer in lg.layers.values():
        info = {"op": layer.op, "inputs": layer.inputs, "out_shape": list(layer.out_shape), "macs": layer.macs,
                "fan_in": layer.fan_in, "fused": layer.fused,
                "params": 0 if layer.weight is None else int(layer.weight.size)
                + (0 if layer.bias is None else int(layer.bias.size))}
        if layer.name in arith:
            info["accumulator"] = arith[layer.name].bound.to_json()
        if layer.op == "table":
            from .passes.table import build_table

            t = build_table(layer.attrs["match"], plan[lg.layers[layer.inputs[0]].output_key], layer.name)
            info["table"] = {"function": layer.attrs["fn"], "entries": int(len(t.table)), "index_shift": t.shift,
                             "frac": t.frac, "exact": t.exact, "max_error": t.bound}
        layers[layer.name] = info
    plan.layers = layers
    return Quantized(prepared, lg, plan, stats or {}, arith)


def load_model(model, input_shape=None, allow_float_islands: bool = False) -> tuple:
    """``(prepared module, layer graph)`` from an ONNX path or a Relax module.

    ``allow_float_islands``: unary ops with no integer realization (sigmoid, tanh, gelu, ...) stay in float64
    between a dequantize and a quantize instead of being refused; ``tvm_fxp.passes.float_islands(lg)`` lists
    them (and the CLI's summary and report do).
    """
    from .passes.analysis import allow_float_islands as allow, analyze

    mod = import_onnx(model, input_shape) if isinstance(model, (str, Path)) else model
    prepared = prepare(mod)
    if allow_float_islands:
        prepared = allow(prepared)
    return prepared, analyze(prepared["main"])


def make_evaluator(prepared, lg, stats, inputs, labels=None, time_limit=None, progress=True,
                   max_evaluations=None):
    """The plan scorer the search methods use (parametric simulation compiled once).  ``time_limit``
    (seconds, from the end of the scorer's compilation) and ``max_evaluations`` bound the search."""
    from tqdm.auto import tqdm

    from .methods.evaluate import Evaluator, uniform_plan

    inputs = check_batch(inputs, "search data")
    bar = tqdm(desc="search", unit="plan", disable=not progress)
    return Evaluator(prepared, lg, uniform_plan(lg, stats, 16), inputs, labels, time_limit, progress=bar,
                     max_evaluations=max_evaluations)


def quantize(model, calib_inputs, method=None, input_shape=None, batch_size: int = 64, progress: bool = True,
             search_inputs=None, search_labels=None, time_limit: float | None = None,
             allow_float_islands: bool = False) -> Quantized:
    """Calibrate ``model`` on ``calib_inputs`` and choose formats with ``method`` (default: uniform 8-bit).

    Search methods score candidate plans on ``search_inputs`` (default: the calibration inputs), on top-1
    when ``search_labels`` are given, else label-free against the float model; ``time_limit`` (seconds)
    bounds the search, which then returns its best plan so far.
    """
    from .methods import needs_evaluation
    from .methods.uniform import Uniform

    method = method or Uniform(8)
    prepared, lg = load_model(model, input_shape, allow_float_islands)
    stats = calibrate(prepared, lg, calib_inputs, batch_size=batch_size, progress=progress)
    evaluate = None
    if needs_evaluation(method):
        labels = None if getattr(method, "label_free", False) else search_labels  # self-distillation
        evaluate = make_evaluator(prepared, lg, stats, calib_inputs if search_inputs is None else search_inputs,
                                  labels, time_limit, progress)
    plan = get_method(method.name).allocate(lg, stats, method, evaluate)
    if isinstance(model, (str, Path)):
        plan.model = {"name": Path(model).name, "sha256": model_digest(model)}
    return bind_plan(prepared, lg, plan, stats)


def host_target() -> tvm.target.Target:
    """LLVM for this machine's CPU (so LLVM may use its vector extensions)."""
    return tvm.target.Target({"kind": "llvm", "mcpu": tvm.target.codegen.llvm_get_system_cpu()})


def build(mod: tvm.IRModule, target=None):
    """Compile a (float, simulated or realized) module to a VM executable (default: the host CPU).

    On LLVM CPU targets the Relax pipeline is ``tvm_fxp.schedules.pipeline``: TVM's CPU pipeline plus the
    fusion of every integer conv2d/matmul with its requantize epilogue into one scheduled kernel, and
    vectorized elementwise kernels (same results, bit for bit).  Inside ``tvm_fxp.schedules.disabled()``, and
    on other targets, it is ``tvm.compile``'s default.
    """
    from .schedules import pipeline

    target = target or host_target()
    if isinstance(target, (str, dict)):
        target = tvm.target.Target(target)
    return pipeline.build(mod, target)


class Runner:
    """Run a compiled module over a batch of inputs, in chunks (the model has a dynamic batch dimension)."""

    def __init__(self, executable_or_path, device=None):
        dev = device or tvm.cpu()
        ex = executable_or_path
        if isinstance(ex, (str, Path)):
            ex = tvm.runtime.load_module(str(ex))
        self.vm = relax.VirtualMachine(ex, dev)

    def run(self, inputs, batch_size: int = 256):
        """The outputs over ``inputs`` (a list of arrays for a model with several inputs); a model with
        several outputs returns a list of arrays, one per output."""
        arrays = list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]
        outs = []
        for s in range(0, len(arrays[0]), batch_size):
            xs = [tvm.runtime.tensor(np.ascontiguousarray(a[s:s + batch_size], dtype=np.float32)) for a in arrays]
            r = self.vm["main"](*xs)
            outs.append([o.numpy() for o in r] if not hasattr(r, "numpy") else r.numpy())
        if outs and isinstance(outs[0], list):
            return [np.concatenate(parts) for parts in zip(*outs)]
        return np.concatenate(outs) if outs else np.zeros((0,))


def output_integers(y: np.ndarray, frac: int) -> np.ndarray:
    """Stored integers of a dequantized output (exact: the output is ``q * 2**-frac`` in float32)."""
    return np.rint(np.ldexp(y.astype(np.float64), frac)).astype(np.int64)


__all__ = ["ModelError", "PlanError", "CalibrationError", "TensorStats", "Quantized", "Runner", "bind_plan",
           "build", "check_batch", "import_onnx", "load_model", "prepare", "quantize", "output_integers"]
