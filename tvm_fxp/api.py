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

from .calibrate import calibrate
from .methods import get_method
from .plan import Plan, PlanError
from .runtime import Runner, build, host_target, model_batch  # noqa: F401 -- tvm_fxp.build, tvm_fxp.Runner
from .statistics import CalibrationError, TensorStats, check_batch


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


def _ort_outputs(model, feeds: dict) -> list:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL   # the graph as it is
    so.log_severity_level = 3
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def _random_feeds(model, seed: int = 0) -> dict:
    """Uniform [0, 1) inputs of every graph input's static shape (a symbolic batch runs as 2)."""
    from onnx import helper

    init_names = {i.name for i in model.graph.initializer}
    rng = np.random.default_rng(seed)
    feeds = {}
    for inp in model.graph.input:
        if inp.name in init_names:
            continue
        dims = [d if isinstance(d, int) else 2 for d in _dims(inp)]
        dtype = helper.tensor_dtype_to_np_dtype(inp.type.tensor_type.elem_type)
        feeds[inp.name] = rng.random(dims).astype(dtype)
    return feeds


SLIM_KEPT_FOR_PREPARE = ["FusionConvBN", "FusionConvTransposeBN", "FusionConvAdd", "FusionConvTransposeAdd",
                         "FusionConvMul", "FusionConvTransposeMul", "FusionGemm", "FusionGemmMul", "FusionGemmAdd"]


def _original_node_order(original, slim):
    """``slim`` with its nodes in the original model's order (a topological order that ranks each node by
    where its output was in the original graph): onnxslim re-sorts the graph, which would renumber the
    layers (``conv2d_4`` <-> ``conv2d_5`` across a residual block) and break saved plans."""
    import networkx as nx

    rank = {o: i for i, n in enumerate(original.graph.node) for o in n.output}
    producer = {o: i for i, n in enumerate(slim.graph.node) for o in n.output}
    g = nx.DiGraph()
    keys = {}
    for i, n in enumerate(slim.graph.node):
        g.add_node(i)
        keys[i] = min((rank[o] for o in n.output if o in rank), default=len(rank) + i)
        for x in n.input:
            if x in producer and producer[x] != i:
                g.add_edge(producer[x], i)
    order = list(nx.lexicographical_topological_sort(g, key=lambda i: keys[i]))
    nodes = [slim.graph.node[i] for i in order]
    del slim.graph.node[:]
    slim.graph.node.extend(nodes)
    return slim


def simplify_onnx(model, p, record: dict | None = None):
    """Fold the model's shape computations and constants with onnxslim, checked against onnxruntime.

    Exported CNNs compute shapes at run time (``Shape -> Gather -> Concat -> Reshape`` in squeeze-and-excite
    blocks, ``ConstantOfShape``/``Pad`` chains for "same" padding) that TVM's importer cannot take once the
    chain is not a plain shape expression.  With the input shape fixed, onnxslim folds them to constants
    (compared with onnxsim and onnxruntime's offline basic optimization in ``bench/simplifiers.py``: each
    folds every shape computation of the exported graphs there; onnxslim lets its batch-norm fusions be switched
    off by name, so Prepare keeps folding those).  The simplified graph is run against the original in
    onnxruntime on random inputs; any difference beyond float rounding raises ``ModelError``, so a simplifier
    bug cannot pass silently.  ``record`` receives what was done (for summary.json).
    """
    import onnxslim

    rec = record if record is not None else {}
    before = len(model.graph.node)
    try:
        # Folding batch-norm and scales into convs/Gemms stays with Prepare (FoldBatchNorm & co., tested against
        # onnxruntime in float64): onnxslim's float32 fusions would move weights by an ulp.
        slim = onnxslim.slim(model, skip_fusion_patterns=SLIM_KEPT_FOR_PREPARE)
    except Exception as e:
        raise ModelError(f"{p}: the ONNX simplifier (onnxslim {onnxslim.__version__}) failed: "
                         f"{str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__}; rerun "
                         "with simplify=False (CLI --no-simplify)") from None
    slim = _original_node_order(model, slim)
    rec.update({"tool": f"onnxslim {onnxslim.__version__}", "nodes_before": before,
                "nodes_after": len(slim.graph.node)})
    feeds = _random_feeds(model)
    try:
        ref = _ort_outputs(model, feeds)
    except Exception as e:   # onnxruntime cannot run the original: nothing to compare with
        rec["onnxruntime_check"] = f"not checked: onnxruntime cannot run {p.name}: {str(e).splitlines()[0][:200]}"
        return slim
    try:
        got = _ort_outputs(slim, feeds)
    except Exception as e:
        raise ModelError(f"{p}: onnxruntime cannot run the simplified model ({str(e).splitlines()[0][:200]}); "
                         "rerun with simplify=False (CLI --no-simplify)") from None
    if not all(np.all(np.isfinite(np.asarray(r, np.float64))) for r in ref):
        # NaN/inf weights computed by a constant subgraph: refused by name after the import, nothing to compare
        rec["onnxruntime_check"] = "not checked: the original model's outputs are not finite"
        return slim
    worst = 0.0
    for r, g in zip(ref, got):
        r64, g64 = np.asarray(r, np.float64), np.asarray(g, np.float64)
        if r64.shape != g64.shape:
            raise ModelError(f"{p}: the simplified model's output has shape {g64.shape}, the original's "
                             f"{r64.shape}; rerun with simplify=False (CLI --no-simplify)")
        worst = max(worst, float(np.abs(r64 - g64).max(initial=0)) / max(float(np.abs(r64).max(initial=0)), 1e-6))
    if worst > 1e-4:
        raise ModelError(f"{p}: the simplified model differs from the original in onnxruntime (max relative "
                         f"difference {worst:.2e}); rerun with simplify=False (CLI --no-simplify)")
    rec["onnxruntime_check"] = {"inputs": {k: list(v.shape) for k, v in feeds.items()}, "max_rel_diff": worst}
    return slim


def import_onnx(path, input_shape=None, simplify: bool = True, record: dict | None = None) -> tvm.IRModule:
    """Load an ONNX file into Relax (weights as constants), with clear errors for bad files.

    ``input_shape`` (e.g. ``[1, 3, 224, 224]``) fixes the input's non-batch dimensions; it is required when
    the model leaves them dynamic.  The batch dimension stays as the model has it: fixed (published models:
    ``1x3x224x224``; every stage then runs the data in chunks of that batch) or symbolic.
    ``simplify``: fold shape computations and constants first (``simplify_onnx``); ``record`` receives what
    the import did.
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
    if simplify:
        model = simplify_onnx(model, p, record if record is not None else {})
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
    graph: object                    # tvm_fxp.layer_graph.LayerGraph
    plan: Plan
    stats: dict = field(default_factory=dict)
    arithmetic: dict = field(default_factory=dict)

    @property
    def batch(self) -> int | None:
        """The model's fixed batch size, None when dynamic (see ``Runner``)."""
        return model_batch(self.prepared)

    def annotated(self) -> tvm.IRModule:
        from .passes import Annotate

        return Annotate(self.plan)(self.prepared)

    def simulated(self) -> tvm.IRModule:
        from .passes import Simulate

        return Simulate()(self.annotated())

    def realized(self, accumulator: str = "proven") -> tvm.IRModule:
        """The integer-only graph; ``accumulator``: ``"proven"`` (int16 wherever the plan's bound proves it),
        ``"wide"`` (int32/int64 everywhere, the opt-out) or ``"narrow"`` (also k-tiled int16), see ``Realize``."""
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
        if layer.op == "resize":     # linear interpolation weights at 2**-weight_bits (passes/resize.py)
            info["interpolation"] = {"mode": layer.attrs["mode"], "weight_bits": layer.attrs["weight_bits"],
                                     "max_weight_error": layer.attrs["weights"].bound}
        layers[layer.name] = info
    plan.layers = layers
    return Quantized(prepared, lg, plan, stats or {}, arith)


def load_model(model, input_shape=None, allow_float_islands: bool = False, simplify: bool = True,
               record: dict | None = None) -> tuple:
    """``(prepared module, layer graph)`` from an ONNX path or a Relax module.

    ``allow_float_islands``: unary ops with no integer realization (sigmoid, tanh, gelu, ...) stay in float64
    between a dequantize and a quantize instead of being refused; ``tvm_fxp.passes.float_islands(lg)`` lists
    them (and the CLI's summary and report do).
    """
    from .passes.analysis import allow_float_islands as allow, analyze

    mod = import_onnx(model, input_shape, simplify, record) if isinstance(model, (str, Path)) else model
    prepared = prepare(mod)
    if allow_float_islands:
        prepared = allow(prepared)
    return prepared, analyze(prepared["main"])


def make_evaluator(prepared, lg, stats, inputs, labels=None, time_limit=None, progress=True,
                   max_evaluations=None, check_inputs=None, check_labels=None):
    """The plan scorer the search methods use (parametric simulation compiled once).  ``time_limit``
    (seconds, from the end of the scorer's compilation) and ``max_evaluations`` bound the search.
    ``check_inputs`` (and ``check_labels``): other inputs, scored by the same simulation as the evaluator's
    ``check`` (a search's check split: goyal2021 confirms each choice on it)."""
    from tqdm.auto import tqdm

    from .methods.evaluate import Evaluator, uniform_plan
    from .passes.plan_scorer import PlanScorer, flat_outputs

    inputs = [check_batch(a, "search data") for a in inputs] if isinstance(inputs, (list, tuple)) else \
        check_batch(inputs, "search data")
    bar = tqdm(desc="search", unit="plan", disable=not progress)
    sim = PlanScorer(prepared, uniform_plan(lg, stats, 16), build)
    runner = Runner(build(prepared), batch=model_batch(prepared))
    ev = Evaluator(sim, inputs, flat_outputs(runner.run(inputs)), labels, time_limit, progress=bar,
                   max_evaluations=max_evaluations)
    if check_inputs is not None:
        check_inputs = [check_batch(a, "check data") for a in check_inputs] \
            if isinstance(check_inputs, (list, tuple)) else check_batch(check_inputs, "check data")
        ev.check = Evaluator(sim, check_inputs, flat_outputs(runner.run(check_inputs)), check_labels, time_limit,
                             labels is not None)
    return ev


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


def output_integers(y: np.ndarray, frac: int) -> np.ndarray:
    """Stored integers of a dequantized output (exact: the output is ``q * 2**-frac`` in float32)."""
    return np.rint(np.ldexp(y.astype(np.float64), frac)).astype(np.int64)


__all__ = ["ModelError", "PlanError", "CalibrationError", "TensorStats", "Quantized", "Runner", "bind_plan",
           "build", "check_batch", "import_onnx", "load_model", "model_batch", "prepare", "quantize",
           "output_integers"]
