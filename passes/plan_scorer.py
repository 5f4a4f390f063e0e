"""The plan scorer: a simulated graph compiled once, with the formats fed at run time, to score many plans.

Precision searches (the allocation methods) try hundreds of plans.  Rebuilding and recompiling the simulated
module for each would cost seconds per candidate.  Here the annotated module is simulated with every
activation annotation reading its scale ``2**f``, ``2**-f`` and its clip bounds ``qmin``/``qmax`` from a
runtime ``fxp_table`` (one row per activation tensor), and every weight and bias arriving as a runtime input,
already fake-quantized in numpy.  A table layer (``table.py``: sigmoid, SiLU, tanh, ... over its input's stored
integers) depends on its input's format, so its table arrives at run time as well: one row of ``fxp_lut`` per
table layer (``Table.table`` padded to ``2**INDEX_BITS`` entries) and of ``fxp_lut_params`` (``qmin``,
``2**-shift``, ``2**-K``), built in numpy for each candidate (cached per input format) and looked up with the
same expression as ``Simulate``'s.  The arithmetic is exactly that of ``Simulate`` (float64, same rounding,
same pool multipliers, same tables), so a candidate's outputs are bit-identical to ``Simulate`` of its plan
(tested, table layers included).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import tvm
from tvm import relax

from tvm_fxp.plan import Plan

from .relax_utils import const_np, is_const, main_bindings, op_name
from .analysis import PASS_THROUGH, LrnMatch, composite_patterns
from .annotate import Annotate
from .ops import annotation_format, is_annotate
from .simulate import SIM_DTYPE, simulate_function
from .table import INDEX_BITS, build_table

TABLE_COLUMNS = ("scale", "inv_scale", "qmin", "qmax")
LUT_COLUMNS = ("qmin", "inv_step", "unit")     # per table layer: lowest input integer, 2**-shift, 2**-K
LUT_SIZE = 1 << INDEX_BITS


@dataclass
class ParamLayout:
    activations: list          # plan keys, one row of the runtime table each, in graph order
    constants: list            # plan keys of weights/biases, one runtime input each
    constant_values: dict      # key -> float values (in the graph's shape)
    tables: list = field(default_factory=list)   # (layer, input key, TableMatch): one run-time table each


def _input_key(var, producer) -> str:
    """The plan key of the annotation an activation comes from (through pass-through ops)."""
    while not is_annotate(producer.get(var)):
        e = producer[var]
        var = e if isinstance(e, relax.Var) else e.args[0]
        assert isinstance(e, relax.Var) or op_name(e) in PASS_THROUGH, e
    return annotation_format(producer[var])[1]


def parametric_module(prepared: tvm.IRModule, plan: Plan, probe: list | None = None, tables: bool = True
                      ) -> tuple[tvm.IRModule, ParamLayout]:
    """``main(input, fxp_table, [fxp_lut, fxp_lut_params,] *constants)``: the simulated module with formats
    (and the tables of table layers) as runtime inputs.

    ``plan`` only fixes the structure (which tensors are annotated); any plan of the same model can be
    evaluated with the result.  ``probe``: see ``simulate_function`` (per-layer output means as well).
    ``tables=False``: table layers are their float64 ops instead (the float model, ``layer_means(None)``).
    """
    annotated = Annotate(plan)(prepared)["main"]
    layout = ParamLayout([], [], {})
    producer = {b.var: b.value for b in main_bindings(annotated)}
    lut_rows = {}
    if tables:
        for v, m in composite_patterns(annotated).items():
            if not isinstance(m, LrnMatch):
                lut_rows[v] = len(layout.tables)
                layout.tables.append((v.name, _input_key(m.x, producer), m))
    for b in main_bindings(annotated):
        if is_annotate(b.value):
            _, key = annotation_format(b.value)
            if is_const(b.value.args[0]):
                layout.constants.append(key)
                layout.constant_values[key] = const_np(b.value.args[0])
            else:
                layout.activations.append(key)
    table = relax.Var("fxp_table", relax.TensorType((len(layout.activations), 4), SIM_DTYPE))
    const_vars = {k: relax.Var(f"fxp_{k.replace('.', '_')}",
                               relax.TensorType(layout.constant_values[k].shape, SIM_DTYPE))
                  for k in layout.constants}
    rows = {k: i for i, k in enumerate(layout.activations)}
    luts = []
    if layout.tables:
        luts = [relax.Var("fxp_lut", relax.TensorType((len(layout.tables), LUT_SIZE), SIM_DTYPE)),
                relax.Var("fxp_lut_params", relax.TensorType((len(layout.tables), len(LUT_COLUMNS)), SIM_DTYPE))]

    def row(bb, tensor, i, columns, name):
        # constant indices, in range by construction; mode "clip" because "fast" makes TVM warn at every build
        r = bb.emit(relax.op.take(tensor, relax.const(i, "int64"), axis=0, mode="clip"), f"{name}_row")
        return [bb.emit(relax.op.take(r, relax.const(j, "int64"), axis=0, mode="clip"), f"{name}_{n}")
                for j, n in enumerate(columns)]

    def lower(bb, b, value):
        _, key = annotation_format(value)
        x = value.args[0]
        if is_const(x):
            return const_vars[key]
        col = row(bb, table, rows[key], TABLE_COLUMNS, b.var.name)
        scaled = bb.emit(relax.op.multiply(x, col[0]), f"{b.var.name}_scaled")
        mag = bb.emit(relax.op.floor(relax.op.add(relax.op.abs(scaled), relax.const(0.5, SIM_DTYPE))))
        rounded = bb.emit(relax.op.multiply(relax.op.sign(scaled), mag))
        clipped = bb.emit(relax.op.maximum(relax.op.minimum(rounded, col[3]), col[2]), f"{b.var.name}_q")
        return relax.op.multiply(clipped, col[1])

    def lower_table(bb, b, m, x):
        """``Simulate``'s lookup (``table.emit_table_lookup``) with the candidate's table and input scale."""
        i, name = lut_rows[b.var], b.var.name
        qmin, inv_step, unit = row(bb, luts[1], i, LUT_COLUMNS, name)
        (scale,) = row(bb, table, rows[layout.tables[i][1]], TABLE_COLUMNS[:1], f"{name}_in")
        q = bb.emit(relax.op.multiply(x, scale), f"{name}_q_f")
        idx = bb.emit(relax.op.floor(relax.op.multiply(relax.op.subtract(q, qmin), inv_step)), f"{name}_idx_f")
        idx = bb.emit(relax.op.astype(idx, "int32"), f"{name}_idx")
        lut = bb.emit(relax.op.take(luts[0], relax.const(i, "int64"), axis=0, mode="clip"), f"{name}_lut")
        t = bb.emit(relax.op.take(lut, idx, axis=0, mode="clip"), f"{name}_t")
        return relax.op.multiply(t, unit)

    func = simulate_function(annotated, lower_annotation=lower, lower_table=lower_table if tables else None,
                             extra_params=[table] + luts + [const_vars[k] for k in layout.constants], probe=probe)
    return tvm.IRModule({"main": func}), layout


def flat_outputs(out) -> np.ndarray:
    """One output as it is; several outputs (detection heads) as one ``(N, total)`` array per image, so scores
    (agreement, KL against float) see every output."""
    if isinstance(out, np.ndarray):
        return out
    if hasattr(out, "numpy"):
        return out.numpy()
    parts = [o.numpy() if hasattr(o, "numpy") else np.asarray(o) for o in out]
    return np.concatenate([p.reshape(len(p), -1) for p in parts], axis=1)


class PlanScorer:
    """Simulate plans of one model on fixed inputs with one compiled module (the ``sim`` of the search
    methods' ``tvm_fxp.methods.evaluate.Evaluator``).

    ``outputs(plan)`` returns the simulated outputs (bit-identical to ``Simulate`` of ``plan``).  ``build(mod,
    target)`` compiles a module (``tvm_fxp.build``: the convs and matmuls are then the scheduled float64
    kernels of ``tvm_fxp.schedules``, exact, see ``conv2d_int.exact_float``, parallel over the images).
    """

    def __init__(self, prepared: tvm.IRModule, template: Plan, build, target=None, batch_size: int = 256):
        from tvm_fxp.batching import Batching

        from .relax_utils import model_batch

        mod, self.layout = parametric_module(prepared, template)
        self.build = build
        self.vm = relax.VirtualMachine(build(mod, target), tvm.cpu())
        self.batch_size = batch_size
        self.batching = Batching(model_batch(prepared), batch_size)   # a fixed model batch is honoured
        self.calls = 0
        self._probe = {}
        self._luts: dict = {}
        self._args = (prepared, template, target)

    def table(self, plan: Plan) -> np.ndarray:
        rows = []
        for key in self.layout.activations:
            f = plan[key]
            rows.append([np.ldexp(1.0, f.frac), np.ldexp(1.0, -f.frac), f.qmin, f.qmax])
        return np.asarray(rows, dtype=np.float64)

    def luts(self, plan: Plan) -> list:
        """``[fxp_lut, fxp_lut_params]`` of ``plan`` (none without table layers): each table layer's
        ``table.build_table`` for its input's format, as ``Realize`` and ``Simulate`` build it."""
        if not self.layout.tables:
            return []
        lut = np.zeros((len(self.layout.tables), LUT_SIZE))
        params = np.zeros((len(self.layout.tables), len(LUT_COLUMNS)))
        for i, (layer, key, m) in enumerate(self.layout.tables):
            fmt = plan[key]
            if (layer, fmt) not in self._luts:
                self._luts[layer, fmt] = build_table(m, fmt, f"layer {layer}")
            t = self._luts[layer, fmt]
            lut[i, :len(t.table)] = t.table
            params[i] = [t.qmin, np.ldexp(1.0, -t.shift), np.ldexp(1.0, -t.frac)]
        return [lut, params]

    def constants(self, plan: Plan) -> list:
        out = []
        for key in self.layout.constants:
            fmt = plan[key]
            arr = self.layout.constant_values[key]
            if key.endswith(".bias"):
                arr = plan.corrected_bias(key[:-len(".bias")], arr)
            if fmt.per_channel and arr.ndim > 1 and key.endswith(".bias"):
                flat = fmt.fake_quantize(arr.reshape(-1).astype(np.float64))
                out.append(flat.reshape(arr.shape))
            else:
                out.append(fmt.fake_quantize(arr.astype(np.float64)))
        return out

    def outputs(self, plan: Plan, inputs) -> np.ndarray:
        """The simulated outputs (several outputs flattened per image, ``flat_outputs``) of ``inputs`` (an array, or
        a list of arrays for a model with several inputs)."""
        from tvm_fxp.batching import concat, padded_chunks, trim

        table = tvm.runtime.tensor(self.table(plan))
        consts = [tvm.runtime.tensor(np.ascontiguousarray(c)) for c in self.luts(plan) + self.constants(plan)]
        outs = []
        for start, stop, xs in padded_chunks(inputs, self.batching):
            out = self.vm["main"](*[tvm.runtime.tensor(x) for x in xs], table, *consts)
            outs.append(trim(flat_outputs(out), stop - start, len(xs[0])))
        self.calls += 1
        return concat(outs)

    def layer_means(self, plan: Plan | None, inputs: np.ndarray) -> dict:
        """``{layer: per-channel mean of its conv/matmul output}`` (before the bias) over ``inputs``, simulated
        under ``plan``; ``plan=None``: the float model (no rounding, no clipping, float weights)."""
        tables = plan is not None or not self.layout.tables    # the float model: table layers as float ops
        if tables not in self._probe:
            names: list = []
            mod, layout = parametric_module(*self._args[:2], probe=names, tables=tables)
            assert layout.activations == self.layout.activations and layout.constants == self.layout.constants
            self._probe[tables] = (relax.VirtualMachine(self.build(mod, self._args[2]), tvm.cpu()), names)
        vm, names = self._probe[tables]
        if plan is None:
            big = np.ldexp(1.0, 24)    # finer than float32 near 1: the rounding is below float's own error
            table = np.tile([big, 1.0 / big, -1e300, 1e300], (len(self.layout.activations), 1))
            consts = [self.layout.constant_values[k].astype(np.float64) for k in self.layout.constants]
        else:
            table, consts = self.table(plan), self.luts(plan) + self.constants(plan)
        table = tvm.runtime.tensor(np.asarray(table, dtype=np.float64))
        consts = [tvm.runtime.tensor(np.ascontiguousarray(c)) for c in consts]
        # The probe returns batch means, so a padded chunk of a fixed-batch model would count its padding: the
        # inputs of a short last chunk run one at a time, each repeated to fill the batch (its mean is its own).
        sums, total = None, 0
        fixed = self.batching.fixed
        arrays = list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]
        for start, stop in self.batching.chunks(len(arrays[0])):
            chunk = [np.ascontiguousarray(a[start:stop], dtype=np.float32) for a in arrays]
            n = stop - start
            if fixed is not None and n < fixed:
                runs = [([np.repeat(c[i:i + 1], fixed, axis=0) for c in chunk], 1) for i in range(n)]
            else:
                runs = [(chunk, n)]
            for xs, weight in runs:
                out = vm["main"](*[tvm.runtime.tensor(x) for x in xs], table, *consts)
                means = [out[i + 1].numpy() * weight for i in range(len(names))]
                sums = means if sums is None else [a + b for a, b in zip(sums, means)]
                total += weight
        return {n: m / total for n, m in zip(names, sums)}
