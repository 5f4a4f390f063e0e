"""Helpers for the Before/Expected tests: TVMScript modules whose weights are written as parameters of
``main`` and bound to numpy constants (``bind``), compared with ``tvm.ir.assert_structural_equal``."""

import numpy as np
import tvm
from tvm import relax


def bind(mod: tvm.IRModule, **consts) -> tvm.IRModule:
    """``mod`` with the named parameters of ``main`` replaced by constants (numpy arrays)."""
    func = mod["main"].bind_params({k: tvm.runtime.tensor(np.ascontiguousarray(v)) for k, v in consts.items()})
    out = tvm.IRModule(dict(mod.functions))
    out["main"] = func
    return out


def assert_after(transform, before: tvm.IRModule, expected: tvm.IRModule) -> tvm.IRModule:
    """``transform(before)`` equals ``expected``, once both are canonicalized (our passes rebuild a function
    with the result bound to an alias, which ``CanonicalizeBindings`` removes, as ``Prepare`` does)."""
    canon = relax.transform.CanonicalizeBindings()
    after = transform(before)
    tvm.ir.assert_structural_equal(_structure(canon(after)["main"]), _structure(canon(expected)["main"]),
                                   map_free_vars=True)
    return after


INFORMATIONAL_ATTRS = ("fxp_accumulator_reasons",)   # prose for the report (Realize), not the graph's structure


def _structure(func):
    for name in INFORMATIONAL_ATTRS:
        if func.attrs is not None and name in func.attrs:
            func = func.without_attr(name)
    return func
