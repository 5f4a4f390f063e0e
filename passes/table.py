"""Elementwise functions of one activation as integer lookup tables (sigmoid, SiLU, tanh, Mish, GELU, ...).

A *table region* is a set of elementwise float ops that all depend on one activation ``x`` alone (through
scalar constants at most) and contain at least one transcendental op (sigmoid, tanh, exp, log, erf, ...) or a
product of two functions of ``x`` (``x * g(x)``): ``sigmoid(x)``, SiLU ``x * sigmoid(x)``, Mish
``x * tanh(softplus(x))`` as the ONNX importer decomposes it (``max(x, 0) + log(exp(-|x|) + 1)``), GELU, ELU,
HardSwish ``x * clip(x + 3, 0, 6) / 6`` (one exact table instead of a depthwise layer whose weight ``1/6`` is
rounded, a gate format and a product)...  A clip or affine map of ``x`` alone (ReLU6, HardSigmoid) is no table:
it folds into the producing layer exactly (a clip of its accumulator).  Each value of the region used outside it (its *anchor*)
is one layer ``y = f(x)``, computed as a lookup in a table over the stored integers of ``x``:

- ``x`` has format ``Q(b, f)``: its stored integers ``q`` run over ``qmin..qmax`` (``2**b`` values).  With
  ``b <= INDEX_BITS`` (12) the table has one entry per ``q`` and is exact: entry ``T[q - qmin]`` is
  ``round_half_away(f(q * 2**-f) * 2**K)``; with wider inputs the table indexes the top ``INDEX_BITS`` bits,
  ``T[(q - qmin) >> r]``, each entry ``f`` at the middle of its bucket of ``2**r`` integers, and the error
  bound (``Table.bound``, exhaustive over every stored integer) is stated in the layer's arithmetic;
- ``K`` (``Table.frac``) is the largest with ``max |T| < 2**TABLE_BITS`` (22): the lookup is an accumulator at
  ``2**-K`` that the layer's output annotation requantizes (rounding shift, saturate) like any other layer.

The function itself is evaluated once, in numpy float64, by interpreting the region's ops (``_NUMPY``): the
model's own arithmetic, so any composition of the supported elementwise ops is tabulated the same way.  A
region whose function is not finite for every real input (``log``/``sqrt`` of negative numbers) is no table;
with ``--allow-float-islands`` such ops stay float islands.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from tvm import relax

from tvm_fxp.bounds import EXTRA_ARITHMETIC
from tvm_fxp.formats import FixedPointFormat, round_half_away

from .relax_utils import const_np, is_const, op_name, static_shape

INDEX_BITS = 12          # at most 2**12 entries; exact for inputs up to 12 bits
TABLE_BITS = 22          # entries below 2**22 in magnitude (int32, exact in float64)
MAX_INPUT_BITS = 16      # the error bound is computed exhaustively over every stored input integer


def _erf(v):
    return np.vectorize(math.erf, otypes=[np.float64])(v)


def _sigmoid(v):
    return 0.5 * (1 + np.tanh(0.5 * v))


TRANSCENDENTAL = {
    "relax.sigmoid": _sigmoid, "relax.tanh": np.tanh, "relax.exp": np.exp, "relax.log": np.log,
    "relax.erf": _erf, "relax.sqrt": np.sqrt, "relax.rsqrt": lambda v: 1 / np.sqrt(v),
    "relax.nn.silu": lambda v: v * _sigmoid(v), "relax.nn.softplus": lambda v: np.logaddexp(0, v),
    "relax.nn.gelu": lambda v: 0.5 * v * (1 + _erf(v / np.sqrt(2))),
    "relax.nn.gelu_tanh": lambda v: 0.5 * v * (1 + np.tanh(np.sqrt(2 / np.pi) * (v + 0.044715 * v ** 3))),
    "relax.nn.elu": lambda v: np.where(v > 0, v, np.expm1(np.minimum(v, 0))),
    "relax.nn.selu": lambda v: 1.0507009873554805 * np.where(v > 0, v, 1.6732632423543772 * np.expm1(np.minimum(v, 0))),
    "relax.power": None,   # binary, see _eval
}
ELEMENTWISE = {"relax.add": np.add, "relax.subtract": np.subtract, "relax.multiply": np.multiply,
               "relax.divide": np.divide, "relax.maximum": np.maximum, "relax.minimum": np.minimum,
               "relax.abs": np.abs, "relax.negative": np.negative, "relax.square": np.square,
               "relax.nn.relu": lambda v: np.maximum(v, 0), "relax.clip": None, "relax.nn.leakyrelu": None,
               "relax.power": np.power}
REGION_OPS = set(TRANSCENDENTAL) | set(ELEMENTWISE)
_AFFINE = {"relax.add", "relax.subtract", "relax.multiply", "relax.divide"}
_WEIGHTED = {"relax.nn.conv2d", "relax.matmul", "relax.nn.conv2d_transpose"}
NONLINEAR = set(TRANSCENDENTAL) - {"relax.power"}


@dataclass
class TableMatch:
    """``anchor = f(x)`` over the ops ``inner`` (anchor excluded) of a table region."""

    x: object
    anchor: object
    inner: list
    ops: dict                       # var -> its Call, for every var of the region the anchor depends on
    describe: str                   # e.g. "multiply(x, sigmoid(x))"


def _scalar_const(e):
    return is_const(e) and const_np(e).size == 1


def table_patterns(bindings, producer, users, results, skip) -> dict:
    """``{anchor var: TableMatch}`` for every table region of a function (see the module docstring)."""
    source: dict = {}     # member var -> source x
    for b in bindings:
        v, e = b.var, b.value
        name = op_name(e)
        if name not in REGION_OPS or v in skip or not isinstance(v.ty, relax.TensorType) or \
                not str(v.ty.dtype).startswith("float"):
            continue
        tensors = [a for a in e.args if isinstance(a, relax.Expr) and not _scalar_const(a)
                   and isinstance(a.ty, relax.TensorType)]
        if any(not isinstance(a, relax.Var) for a in tensors) or not tensors:
            continue
        if name in _AFFINE and any(op_name(producer.get(a)) in _WEIGHTED and len(users.get(a, [])) == 1
                                   for a in tensors):
            continue      # a (scalar) bias or scale of a conv/matmul: Prepare folds it into the layer
        srcs = {source.get(a, a) for a in tensors}
        if len(srcs) != 1:
            continue
        x = srcs.pop()
        if static_shape(v) != static_shape(x):
            continue
        source[v] = x
    out: dict = {}
    members_of: dict = {}
    for v, x in source.items():
        members_of.setdefault(x, set()).add(v)
    order = {b.var: i for i, b in enumerate(bindings)}

    def cone_of(anchor, s, members):
        cone, stack, leaves = [], [anchor], set()
        while stack:
            v = stack.pop()
            if v.same_as(s):
                leaves.add(s)
            elif v in members and v not in cone:
                cone.append(v)
                stack.extend(a for a in producer[v].args if isinstance(a, relax.Var))
            elif v not in members:
                leaves.add(v)
        return cone, leaves

    def used_outside(v, cone):
        return v in results or any(u.var not in cone for u in users.get(v, []))

    for x, members in members_of.items():
        anchors = [v for v in members if v in results or any(u.var not in members for u in users.get(v, []))]
        for anchor in anchors:
            cone, _ = cone_of(anchor, x, members)
            # the source: x, or (when a value inside is also used elsewhere, e.g. a relu before a SiLU) the
            # nearest such value; the function must depend on it alone
            candidates = [x] + sorted((v for v in cone if not v.same_as(anchor) and used_outside(v, cone)),
                                      key=lambda v: -order[v])
            for src in candidates:
                c, leaves = cone_of(anchor, src, members)
                inner = [v for v in c if not v.same_as(anchor)]
                if leaves != {src} or not _is_function(c, producer) or any(used_outside(v, c) for v in inner):
                    continue
                match = TableMatch(src, anchor, inner, {v: producer[v] for v in c}, "")
                if _finite_everywhere(match):
                    match.describe = _describe(match, anchor)
                    out[anchor] = match
                break
    return out


def _is_function(cone, producer) -> bool:
    """A region worth a table: a transcendental op, or a product of two functions of ``x`` (HardSwish)."""
    return any(op_name(producer[v]) in NONLINEAR or
               op_name(producer[v]) == "relax.multiply" and not any(_scalar_const(a) for a in producer[v].args)
               for v in cone)


def _describe(m: TableMatch, v, depth=0) -> str:
    if v.same_as(m.x):
        return "x"
    e = m.ops.get(v)
    if e is None or depth > 8:
        return "..."
    args = []
    for a in e.args:
        if _scalar_const(a):
            args.append(f"{float(const_np(a).reshape(())):g}")
        elif isinstance(a, relax.Expr) and isinstance(getattr(a, "ty", None), relax.TensorType):
            args.append(_describe(m, a, depth + 1))
    if op_name(e) == "relax.clip":
        args += [f"{float(e.args[1].value):g}", f"{float(e.args[2].value):g}"]
    return f"{op_name(e).split('.')[-1]}({', '.join(args)})"


def evaluate(m: TableMatch, x: np.ndarray) -> np.ndarray:
    """The region's function at the real values ``x`` (float64), interpreting its ops in numpy."""
    memo = {}

    def ev(v):
        if v.same_as(m.x):
            return x
        if v in memo:
            return memo[v]
        e = m.ops[v]
        name = op_name(e)
        args = [float(const_np(a).reshape(())) if _scalar_const(a) else ev(a) for a in e.args
                if _scalar_const(a) or isinstance(a, relax.Var)]
        with np.errstate(all="ignore"):
            if name == "relax.clip":
                r = np.clip(args[0], float(e.args[1].value), float(e.args[2].value))
            elif name == "relax.nn.leakyrelu":
                r = np.where(args[0] > 0, args[0], float(e.attrs.alpha) * args[0])
            elif name in TRANSCENDENTAL and TRANSCENDENTAL[name] is not None:
                r = TRANSCENDENTAL[name](args[0])
            else:
                r = ELEMENTWISE[name](*args)
        memo[v] = np.asarray(r, dtype=np.float64)
        return memo[v]

    return ev(m.anchor)


def _finite_everywhere(m: TableMatch) -> bool:
    grid = np.concatenate([-np.logspace(-6, 2, 200), [0.0], np.logspace(-6, 2, 200)])
    try:
        return bool(np.all(np.isfinite(evaluate(m, grid))))
    except Exception:
        return False


@dataclass(frozen=True)
class Table:
    """The lookup of one table layer for an input format: ``y = T[(q - qmin) >> shift] * 2**-frac``."""

    table: np.ndarray      # int64
    shift: int
    frac: int
    qmin: int
    bound: float           # max |T[idx(q)] * 2**-frac - f(q * 2**-f_in)| over every stored input integer q

    @property
    def exact(self) -> bool:
        return self.shift == 0


def build_table(m: TableMatch, fmt: FixedPointFormat, where: str = "") -> Table:
    from tvm_fxp.bounds import AccumulatorError

    if fmt.bits > MAX_INPUT_BITS:
        raise AccumulatorError(f"{where}: a table over {fmt.bits}-bit inputs; give its input at most "
                               f"{MAX_INPUT_BITS} bits")
    shift = max(0, fmt.bits - INDEX_BITS)
    n = ((fmt.qmax - fmt.qmin) >> shift) + 1
    mid = fmt.qmin + np.arange(n, dtype=np.float64) * 2.0 ** shift + (2.0 ** shift - 1) / 2
    mid = np.minimum(mid, fmt.qmax)
    values = evaluate(m, np.ldexp(mid, -fmt.frac))
    if not np.all(np.isfinite(values)):
        raise AccumulatorError(f"{where}: the function is not finite over the input format {fmt}; "
                               "give its input fewer integer bits")
    peak = float(np.max(np.abs(values)))
    frac = TABLE_BITS - 1 - (math.frexp(peak)[1] if peak > 0 else 0)
    frac = max(min(frac, 60), -60)
    table = round_half_away(np.ldexp(values, frac)).astype(np.int64)
    q = np.arange(fmt.qmin, fmt.qmax + 1, dtype=np.int64)
    exact_vals = evaluate(m, np.ldexp(q.astype(np.float64), -fmt.frac))
    got = np.ldexp(table[(q - fmt.qmin) >> shift].astype(np.float64), -frac)
    bound = float(np.max(np.abs(got - exact_vals)))
    return Table(table, shift, frac, fmt.qmin, bound)


def table_arithmetic(name: str, fmts: list, attrs: dict):
    """A table layer: the lookup at ``2**-K``, magnitude at most ``max |T|``."""
    from tvm_fxp.bounds import AccumulatorBound, LayerArithmetic

    (x,) = fmts
    t = build_table(attrs["match"], x, f"layer {name}")
    bound = int(np.max(np.abs(t.table)))
    return LayerArithmetic(name, np.asarray(t.frac), AccumulatorBound(name, bound, bound, 1))


EXTRA_ARITHMETIC["table"] = table_arithmetic     # the core's registry of layer arithmetic (tvm_fxp.bounds)


def emit_table_lookup(bb, x, fmt: FixedPointFormat, m: TableMatch, dtype: str, name: str):
    """``(T[idx(q)] in dtype, table)`` for every element of ``x``: ``x`` holds stored integers (int) or their
    real values ``q * 2**-f`` (float64, exact multiples: ``q = x * 2**f`` exactly, as an integer-valued float)."""
    t = build_table(m, fmt, name)
    if dtype.startswith("float"):
        q = bb.emit(relax.op.multiply(x, relax.const(np.ldexp(1.0, fmt.frac), "float64")), f"{name}_q_f")
        off = bb.emit(relax.op.subtract(q, relax.const(float(t.qmin), "float64")), f"{name}_off_f")
        idx = bb.emit(relax.op.floor(relax.op.multiply(off, relax.const(np.ldexp(1.0, -t.shift), "float64"))),
                      f"{name}_idx_f")
        idx = bb.emit(relax.op.astype(idx, "int32"), f"{name}_idx")
    else:
        wide = bb.emit(relax.op.astype(x, "int32"), f"{name}_wide")
        off = bb.emit(relax.op.subtract(wide, relax.const(np.int32(t.qmin), "int32")), f"{name}_off")
        idx = off if t.shift == 0 else bb.emit(relax.op.right_shift(off, relax.const(np.int32(t.shift), "int32")),
                                               f"{name}_idx")
    table = relax.const(t.table.astype(dtype), dtype)
    return bb.emit(relax.op.take(table, idx, axis=0, mode="clip"), f"{name}_t"), t
