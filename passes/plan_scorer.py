"""The plan scorer: a simulated graph compiled once, with the formats fed at run time, to score many plans.

Precision searches (the allocation methods) try hundreds of plans.  Rebuilding and recompiling the simulated
module for each would cost seconds per candidate.  Here the annotated module is simulated with every
activation annotation reading its scale ``2**f``, ``2**-f`` and its clip bounds ``qmin``/``qmax`` from a
runtime ``fxp_table`` (one row per activation tensor), and every weight and bias arriving as a runtime input,
already fake-quantized in numpy.  The arithmetic is exactly that of ``Simulate`` (float64, same rounding, same
pool multipliers), so a candidate's outputs are bit-identical to ``Simulate`` of its plan (tested).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tvm
from tvm import relax

from tvm_fxp.plan import Plan

from .relax_utils import const_np, is_const, main_bindings
from .annotate import Annotate
from .ops import annotation_format, is_annotate
from .simulate import SIM_DTYPE, simulate_function

TABLE_COLUMNS = ("scale", "inv_scale", "qmin", "qmax")


@dataclass
class ParamLayout:
    activations: list          # plan keys, one row of the runtime table each, in graph order
    constants: list            # plan keys of weights/biases, one runtime input each
    constant_values: dict      # key -> float values (in the graph's shape)


def parametric_module(prepared: tvm.IRModule, plan: Plan, probe: list | None = None
                      ) -> tuple[tvm.IRModule, ParamLayout]:
    """``main(input, fxp_table, *constants)``: the simulated module with formats as runtime inputs.

    ``plan`` only fixes the structure (which tensors are annotated); any plan of the same model can be
    evaluated with the result.  ``probe``: see ``simulate_function`` (per-layer output means as well).
    """
    annotated = Annotate(plan)(prepared)["main"]
    layout = ParamLayout([], [], {})
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

    def lower(bb, b, value):
        _, key = annotation_format(value)
        x = value.args[0]
        if is_const(x):
            return const_vars[key]
        # constant indices, in range by construction; mode "clip" because "fast" makes TVM warn at every build
        r = bb.emit(relax.op.take(table, relax.const(rows[key], "int64"), axis=0, mode="clip"), f"{b.var.name}_fmt")
        col = [bb.emit(relax.op.take(r, relax.const(i, "int64"), axis=0, mode="clip"), f"{b.var.name}_{n}")
               for i, n in enumerate(TABLE_COLUMNS)]
        scaled = bb.emit(relax.op.multiply(x, col[0]), f"{b.var.name}_scaled")
        mag = bb.emit(relax.op.floor(relax.op.add(relax.op.abs(scaled), relax.const(0.5, SIM_DTYPE))))
        rounded = bb.emit(relax.op.multiply(relax.op.sign(scaled), mag))
        clipped = bb.emit(relax.op.maximum(relax.op.minimum(rounded, col[3]), col[2]), f"{b.var.name}_q")
        return relax.op.multiply(clipped, col[1])

    func = simulate_function(annotated, lower_annotation=lower,
                             extra_params=[table] + [const_vars[k] for k in layout.constants], probe=probe)
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
        self._probe = None
        self._args = (prepared, template, target)

    def table(self, plan: Plan) -> np.ndarray:
        rows = []
        for key in self.layout.activations:
            f = plan[key]
            rows.append([np.ldexp(1.0, f.frac), np.ldexp(1.0, -f.frac), f.qmin, f.qmax])
        return np.asarray(rows, dtype=np.float64)

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

    def outputs(self, plan: Plan, inputs: np.ndarray) -> np.ndarray:
        table = tvm.runtime.tensor(self.table(plan))
        consts = [tvm.runtime.tensor(np.ascontiguousarray(c)) for c in self.constants(plan)]
        from tvm_fxp.batching import concat, run_batched

        outs = run_batched(lambda x: flat_outputs(self.vm["main"](tvm.runtime.tensor(x), table, *consts)), inputs,
                           self.batching)
        self.calls += 1
        return concat(outs)

    def layer_means(self, plan: Plan | None, inputs: np.ndarray) -> dict:
        """``{layer: per-channel mean of its conv/matmul output}`` (before the bias) over ``inputs``, simulated
        under ``plan``; ``plan=None``: the float model (no rounding, no clipping, float weights)."""
        if self._probe is None:
            names: list = []
            mod, layout = parametric_module(*self._args[:2], probe=names)
            assert layout.activations == self.layout.activations and layout.constants == self.layout.constants
            self._probe = (relax.VirtualMachine(self.build(mod, self._args[2]), tvm.cpu()), names)
        vm, names = self._probe
        if plan is None:
            big = np.ldexp(1.0, 24)    # finer than float32 near 1: the rounding is below float's own error
            table = np.tile([big, 1.0 / big, -1e300, 1e300], (len(self.layout.activations), 1))
            consts = [self.layout.constant_values[k].astype(np.float64) for k in self.layout.constants]
        else:
            table, consts = self.table(plan), self.constants(plan)
        table = tvm.runtime.tensor(np.asarray(table, dtype=np.float64))
        consts = [tvm.runtime.tensor(np.ascontiguousarray(c)) for c in consts]
        # The probe returns batch means, so a padded chunk of a fixed-batch model would count its padding: the
        # inputs of a short last chunk run one at a time, each repeated to fill the batch (its mean is its own).
        sums, total = None, 0
        fixed = self.batching.fixed
        for start, stop in self.batching.chunks(len(inputs)):
            chunk = np.ascontiguousarray(inputs[start:stop], dtype=np.float32)
            if fixed is not None and len(chunk) < fixed:
                runs = [(np.repeat(chunk[i:i + 1], fixed, axis=0), 1) for i in range(len(chunk))]
            else:
                runs = [(chunk, len(chunk))]
            for x, weight in runs:
                out = vm["main"](tvm.runtime.tensor(x), table, *consts)
                means = [out[i + 1].numpy() * weight for i in range(len(names))]
                sums = means if sums is None else [a + b for a, b in zip(sums, means)]
                total += weight
        return {n: m / total for n, m in zip(names, sums)}
