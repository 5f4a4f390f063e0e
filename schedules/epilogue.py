"""Per-layer epilogues fused into the integer conv2d/matmul kernels.

``Realize`` follows every conv2d/matmul with a chain of small elementwise ops on the accumulator: bias add,
relu/clip (``maximum``/``minimum`` with constant bounds), the rounding right shift ``(t + half - [t<0]) >> s``
(a small DAG: ``t`` feeds both the ``less`` and the ``add``), saturate and ``astype`` to the storage dtype.
Left as separate Relax ops they become separate, unscheduled TIR kernels that stream int16/int32
tensors through memory several times; at batch 1 that costs more than the convolution itself.

``match(func, index, conv_var)`` finds that DAG after one kernel call: every binding that is one of the
elementwise ops below, whose operands are the accumulator, earlier ops of the DAG, or constants that are
scalars or per output channel, and whose value (except the last) is used only inside the DAG.  It returns an
``Epilogue``: the steps as data, the per-channel constants (passed to the kernel as arguments), and the
result dtype.  ``Epilogue.apply(value, channel, params)`` rebuilds the exact TIR expression TVM's own
legalization (``topi``) produces for each op -- same dtypes, same operation order -- so the fused kernel
computes the same integers as the unfused graph, bit for bit (``tests/schedules/test_fused.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from tvm import relax, tirx
from tvm.ir.expr import GenericConst

BINARY = {
    "relax.add": lambda a, b: a + b,
    "relax.subtract": lambda a, b: a - b,
    "relax.multiply": lambda a, b: a * b,
    "relax.right_shift": lambda a, b: a >> b,
    "relax.left_shift": lambda a, b: a << b,
    "relax.maximum": tirx.max,
    "relax.minimum": tirx.min,
    "relax.less": lambda a, b: a < b,
}
UNARY = ("relax.astype", "relax.nn.relu")


@dataclass
class Epilogue:
    """Elementwise steps after an accumulator; operands: ``("v", i)`` (the result of step ``i``, ``-1`` the
    accumulator), ``("s", value, dtype)`` (a scalar) or ``("c", j)`` (per-channel constant ``j``)."""

    steps: list = field(default_factory=list)      # (op name, [operands], dtype of the result)
    consts: list = field(default_factory=list)     # 1-D numpy arrays, one value per output channel
    out_dtype: str = ""

    @property
    def key(self) -> tuple:
        """Identifies the generated code (constants excluded: they are kernel arguments)."""
        return tuple((op, tuple(tuple(str(x) for x in a) for a in args), dt) for op, args, dt in self.steps) + \
            tuple((str(c.dtype), c.size) for c in self.consts)

    def apply(self, value, channel, params) -> tirx.PrimExpr:
        """The epilogue of ``value`` (the accumulator of output channel ``channel``); ``params[j]`` is the
        buffer (te tensor) of ``consts[j]``."""
        def expr(x):     # a te TensorSlice (``tensor[i, j]``) as the PrimExpr it stands for
            return x.asobject() if hasattr(x, "asobject") else x

        vals = [expr(value)]

        def operand(a):
            if a[0] == "v":
                return vals[a[1] + 1]
            if a[0] == "s":
                return tirx.const(a[1], a[2])
            return expr(params[a[1]][channel])

        for op, args, dtype in self.steps:
            xs = [operand(a) for a in args]
            if op == "relax.astype":
                out = xs[0].astype(dtype)
            elif op == "relax.nn.relu":
                out = tirx.max(xs[0], tirx.const(0, str(xs[0].ty)))
            else:
                out = BINARY[op](*xs)
            vals.append(out)
        return vals[-1]


def _op(expr) -> str | None:
    if isinstance(expr, relax.Call) and hasattr(expr.op, "name"):
        return str(expr.op.name)
    return None


def _per_channel(value: np.ndarray, out_shape: list, axis) -> np.ndarray | None:
    """``value`` broadcast to ``out_shape`` (batch 1) as one entry per channel on ``axis``, if it is one;
    ``axis`` may be a tuple (blocked layouts: ``(1, 4)`` of ``(N, C/16, H, W, 16)``, channel ``cb * 16 + c``)."""
    axes = (axis,) if isinstance(axis, int) else tuple(axis)
    try:
        full = np.broadcast_to(value, out_shape)
    except ValueError:
        return None
    index = [0] * len(out_shape)
    shape = [1] * len(out_shape)
    for a in axes:
        index[a] = slice(None)
        shape[a] = out_shape[a]
    line = full[tuple(index)]
    if not np.array_equal(full, np.broadcast_to(line.reshape(shape), out_shape)):
        return None
    return np.ascontiguousarray(line.reshape(-1))


def _widens(steps: list, last: int) -> bool:
    """Whether step ``last`` is an ``astype`` of step ``last - 1``'s value to a wider integer type."""
    op, args, dtype = steps[last]
    src = steps[last - 1][2]
    return op == "relax.astype" and args[0] == ("v", last - 1) and src.startswith(("int", "uint")) and \
        dtype.startswith(("int", "uint")) and np.dtype(dtype).itemsize > np.dtype(src).itemsize


def match(bindings: list, start: int, acc_var, uses: dict, outputs: set, channel_axis: int) -> tuple | None:
    """``(Epilogue, last binding index, covered vars)`` for the elementwise DAG after ``acc_var`` (bound at
    ``bindings[start]``), or None when there is none.

    ``uses[var]`` counts every use of a var in the function; ``outputs`` are the vars the function returns.
    """
    out_shape = [1] + [int(s) for s in list(acc_var.ty.shape)[1:]]
    index = {acc_var: -1}          # var -> step index
    epi = Epilogue()
    const_ids: dict = {}
    inner_uses = {acc_var: 0}
    members = []                   # (binding index, var)
    for k in range(start + 1, len(bindings)):
        b = bindings[k]
        value = b.value
        op = _op(value)
        if op not in BINARY and op not in UNARY:
            continue
        if not isinstance(b.var.ty, relax.TensorType) or b.var.ty.shape is None \
                or [int(s) if isinstance(s, tirx.IntImm) else None for s in list(b.var.ty.shape)[1:]] != out_shape[1:]:
            continue
        args, ok, touches = [], True, False
        for a in value.args:
            if isinstance(a, relax.Var) and a in index:
                args.append(("v", index[a]))
                touches = True
            elif isinstance(a, GenericConst):
                c = a.value.numpy()
                if c.size == 1:
                    args.append(("s", c.reshape(()).item(), str(c.dtype)))
                else:
                    line = _per_channel(c, out_shape, channel_axis)
                    if line is None:
                        ok = False
                        break
                    key = (str(line.dtype), line.tobytes())
                    if key not in const_ids:
                        const_ids[key] = len(epi.consts)
                        epi.consts.append(line)
                    args.append(("c", const_ids[key]))
            else:
                ok = False
                break
        if not ok or not touches:
            continue
        dtype = str(b.var.ty.dtype)
        if op == "relax.astype" and str(value.attrs.dtype) != dtype:
            continue
        for a in value.args:
            if isinstance(a, relax.Var) and a in index:
                inner_uses[a] = inner_uses.get(a, 0) + 1
        index[b.var] = len(epi.steps)
        inner_uses[b.var] = 0
        epi.steps.append((op, args, dtype))
        members.append((k, b.var))
    # keep the longest prefix whose every value but the last is used only inside it
    while members:
        last_k, last = members[-1]
        inside = {v for _, v in members} | {acc_var}
        closed = all(uses.get(v, 0) == inner_uses.get(v, 0) and v not in outputs
                     for v in inside if not v.same_as(last))
        if closed and len(members) > 1 and _widens(epi.steps, len(members) - 1):
            closed = False      # a trailing widening astype (e.g. to int64 before a pool's sum) stays outside:
        if closed:              # the kernel stores the narrow value, its consumer widens it as it reads
            epi.steps = epi.steps[:len(members)]
            epi.out_dtype = str(last.ty.dtype)
            used = {a[1] for _, args, _ in epi.steps for a in args if a[0] == "c"}
            if used != set(range(len(epi.consts))):   # drop constants of discarded steps, renumber
                remap = {old: new for new, old in enumerate(sorted(used))}
                epi.consts = [epi.consts[o] for o in sorted(used)]
                epi.steps = [(op, [("c", remap[a[1]]) if a[0] == "c" else a for a in args], dt)
                             for op, args, dt in epi.steps]
            return epi, last_k, inside
        # drop the last member and its uses
        _, var = members.pop()
        op, args, _ = epi.steps[len(members)]
        for a in args:
            if a[0] == "v":
                src = acc_var if a[1] == -1 else members[a[1]][1]
                inner_uses[src] -= 1
        del index[var]
        del inner_uses[var]
    return None
