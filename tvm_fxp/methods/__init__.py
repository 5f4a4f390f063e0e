"""Precision-allocation methods: one module each, each a config dataclass and an ``allocate`` function.

``allocate(layer_graph, stats, config, evaluate=None) -> Plan``.
"""

from __future__ import annotations

import importlib

from .uniform import MethodError, Uniform

METHODS = {"uniform": "tvm_fxp.methods.uniform", "lin2016": "tvm_fxp.methods.lin2016",
           "goyal2021": "tvm_fxp.methods.goyal2021", "fxpqnet": "tvm_fxp.methods.fxpqnet",
           "debruin2020": "tvm_fxp.methods.debruin2020", "mellempudi2017": "tvm_fxp.methods.mellempudi2017"}


def get_method(name: str):
    if name not in METHODS:
        raise MethodError(f"unknown method {name!r}; available: {sorted(METHODS)}")
    return importlib.import_module(METHODS[name])


def needs_evaluation(config) -> bool:
    """Methods that search on accuracy need an evaluator (labelled or label-free data)."""
    return config.name not in ("uniform", "mellempudi2017")


__all__ = ["METHODS", "MethodError", "Uniform", "get_method", "needs_evaluation"]
