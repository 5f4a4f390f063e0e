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
from tvm import relax, te, tirx
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
    tensors: list = field(default_factory=list)    # Relax vars of the output's shape read at the same position

    @property
    def key(self) -> tuple:
        """Identifies the generated code (constants excluded: they are kernel arguments)."""
        return tuple((op, tuple(tuple(str(x) for x in a) for a in args), dt) for op, args, dt in self.steps) + \
            tuple((str(c.dtype), c.size) for c in self.consts) + tuple(str(t.ty.dtype) for t in self.tensors)

    def apply(self, value, channel, params, tensor=None) -> tirx.PrimExpr:
        """The epilogue of ``value`` (the accumulator of output channel ``channel``); ``params[j]`` is the
        buffer (te tensor) of ``consts[j]``; ``tensor(j)`` the value of ``tensors[j]`` at this output position."""
        def expr(x):     # a te TensorSlice (``tensor[i, j]``) as the PrimExpr it stands for
            return x.asobject() if hasattr(x, "asobject") else x

        vals = [expr(value)]

        def operand(a):
            if a[0] == "v":
                return vals[a[1] + 1]
            if a[0] == "s":
                return tirx.const(a[1], a[2])
            if a[0] == "t":
                return expr(tensor(a[1]))
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


def const_placeholders(epilogue: Epilogue | None) -> list:
    """The kernel arguments ``epilogue_c{j}`` that carry ``epilogue``'s constants (one value per output
    channel), in order; none without an epilogue."""
    if epilogue is None:
        return []
    return [te.placeholder((c.size,), str(c.dtype), name=f"epilogue_c{j}") for j, c in enumerate(epilogue.consts)]


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


def match(bindings: list, start: int, acc_var, uses: dict, outputs: set, channel_axis,
          tensors: bool = False, claimed=frozenset()) -> tuple | None:
    """``(Epilogue, last binding index, covered vars)`` for the elementwise DAG after ``acc_var`` (bound at
    ``bindings[start]``), or None when there is none.

    ``uses[var]`` counts every use of a var in the function; ``outputs`` are the vars the function returns.
    ``tensors``: other tensors of the output's shape may be operands (``("t", j)``, e.g. the other side of a
    residual add), an ``astype`` of one bound after ``start`` and used only by the DAG joining it; the kernel
    call must then come after the DAG's last binding (where every such tensor exists).  Bindings whose index
    is in ``claimed`` (already fused elsewhere) are never part of the DAG.
    """
    out_shape = [1] + [int(s) for s in list(acc_var.ty.shape)[1:]]
    bound = {b.var: (i, b.value) for i, b in enumerate(bindings)}
    tensor_ids: dict = {}

    def same_shape(var) -> bool:
        ty = var.ty
        if not isinstance(ty, relax.TensorType) or ty.shape is None or len(ty.shape) != len(out_shape):
            return False
        return [int(x) if isinstance(x, tirx.IntImm) else None for x in list(ty.shape)[1:]] == out_shape[1:]

    def tensor_operand(var) -> tuple:
        if var not in tensor_ids:
            tensor_ids[var] = len(epi.tensors)
            epi.tensors.append(var)
        return ("t", tensor_ids[var])
    index = {acc_var: -1}          # var -> step index
    epi = Epilogue()
    const_ids: dict = {}
    inner_uses = {acc_var: 0}
    members = []                   # (binding index, var)
    for k in range(start + 1, len(bindings)):
        if k in claimed:
            continue
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
            elif tensors and isinstance(a, relax.Var) and same_shape(a):
                args.append(("t-var", a))       # resolved below, once the op is known to join the DAG
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
        resolved = []
        for a in args:
            if a[0] != "t-var":
                resolved.append(a)
                continue
            var = a[1]
            src = bound.get(var)
            # an astype of another tensor, bound after the kernel's op and used only here: read the narrow
            # tensor and convert it in the epilogue (e.g. int8 -> int32 before a residual add)
            if src is not None and src[0] > start and src[0] not in claimed and _op(src[1]) == "relax.astype" \
                    and uses.get(var, 0) == 1 \
                    and var not in outputs and isinstance(src[1].args[0], relax.Var) and same_shape(src[1].args[0]):
                index[var] = len(epi.steps)
                inner_uses[var] = 0       # counted with the op's other operands below
                epi.steps.append(("relax.astype", [tensor_operand(src[1].args[0])], str(var.ty.dtype)))
                members.append((src[0], var))
                resolved.append(("v", index[var]))
            else:
                resolved.append(tensor_operand(var))
        args = resolved
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
        if not any(a[0] == "v" for a in epi.steps[len(members) - 1][1]):
            closed = False      # (the kernel stores the narrow value, its consumer widens it as it reads); an
        if closed:              # absorbed astype of another tensor is never the result
            epi.steps = epi.steps[:len(members)]
            epi.out_dtype = str(last.ty.dtype)
            used_t = sorted({a[1] for _, args, _ in epi.steps for a in args if a[0] == "t"})
            if used_t != list(range(len(epi.tensors))):
                remap_t = {old: new for new, old in enumerate(used_t)}
                epi.tensors = [epi.tensors[o] for o in used_t]
                epi.steps = [(op, [("t", remap_t[a[1]]) if a[0] == "t" else a for a in args], dt)
                             for op, args, dt in epi.steps]
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
