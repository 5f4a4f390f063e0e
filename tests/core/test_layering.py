"""The house's layering, read from the sources with ``ast``: the TVM-free core imports neither the passes, the
kernels nor the face; the kernels import neither the passes nor the face; the passes do not import the face;
there are no import cycles; no module another package imports is private (``_name``)."""

import ast
import subprocess
import sys
from pathlib import Path

import networkx as nx

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = {"tvm_fxp": ROOT / "tvm_fxp", "tvm_fxp.passes": ROOT / "passes", "tvm_fxp.schedules": ROOT / "schedules"}
CORE = {"tvm_fxp", "tvm_fxp.formats", "tvm_fxp.plan", "tvm_fxp.bounds", "tvm_fxp.statistics", "tvm_fxp.metrics",
        "tvm_fxp.costs", "tvm_fxp.layer_graph", "tvm_fxp.batching"}
FACE = {"tvm_fxp.api", "tvm_fxp.finetune", "tvm_fxp.runtime", "tvm_fxp.calibrate", "tvm_fxp.cli", "tvm_fxp.report", "tvm_fxp.datasets",
        "tvm_fxp.images", "tvm_fxp.data", "tvm_fxp.deploy", "tvm_fxp.remote", "tvm_fxp.tune"}


def modules() -> dict:
    """``{dotted module name: path}`` of every module of the installed packages."""
    out = {}
    for pkg, path in PACKAGES.items():
        for f in path.rglob("*.py"):
            rel = f.relative_to(path).with_suffix("").parts
            if rel[-1] == "__init__":
                rel = rel[:-1]
            if pkg == "tvm_fxp" and rel[:1] in (("passes",), ("schedules",)):
                continue
            out[".".join((pkg, *rel))] = f
    return out


def layer(name: str) -> str:
    if name in CORE or name.startswith("tvm_fxp.methods"):
        return "core"
    if name in FACE:
        return "face"
    if name.startswith("tvm_fxp.passes"):
        return "passes"
    if name.startswith("tvm_fxp.schedules"):
        return "schedules"
    raise AssertionError(f"{name} belongs to no layer of the house: add it to CORE or FACE")


def import_graph() -> nx.DiGraph:
    """Module -> module it imports (anywhere in the file, function bodies included)."""
    mods = modules()
    g = nx.DiGraph()
    for name, path in mods.items():
        g.add_node(name)
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")
                    base = ".".join(parts[:len(parts) - node.level + 1] + ([base] if base else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names]
            else:
                continue
            for t in targets:
                if t in mods and t != name:
                    g.add_edge(name, t)
    return g


FORBIDDEN = {"core": {"passes", "schedules", "face"}, "schedules": {"passes", "face"}, "passes": {"face"}}


def test_layers_import_only_downwards():
    g = import_graph()
    bad = [(a, b) for a, b in g.edges if layer(b) in FORBIDDEN.get(layer(a), ())]
    assert not bad, f"imports against the layering: {bad}"


def test_no_import_cycles():
    cycles = list(nx.simple_cycles(import_graph()))
    assert not cycles, f"import cycles: {cycles}"


def test_no_private_module_is_imported_from_another_package():
    g = import_graph()
    bad = [(a, b) for a, b in g.edges if b.rsplit(".", 1)[-1].startswith("_")
           and a.rsplit(".", 1)[0] != b.rsplit(".", 1)[0]]
    assert not bad, bad


def test_core_loads_no_tvm_and_importing_the_face_changes_no_tvm_state():
    """Importing tvm_fxp and every core module loads no TVM; importing the face, the passes and the kernels
    leaves TVM's conv2d/matmul legalization and TVM_NUM_THREADS as they were."""
    core = sorted(m for m in modules() if layer(m) == "core")
    code = f"""
import os, sys
for m in {core!r}:
    __import__(m)
assert "tvm" not in sys.modules, sorted(m for m in sys.modules if m.startswith("tvm") and not m.startswith("tvm_fxp"))
import tvm
before = {{op: tvm.ir.Op.get(op).get_attr("FLegalize") for op in ("relax.nn.conv2d", "relax.matmul")}}
import tvm_fxp.api, tvm_fxp.cli, tvm_fxp.passes, tvm_fxp.schedules
assert tvm_fxp.build and tvm_fxp.Runner and tvm_fxp.quantize
for op, f in before.items():
    assert tvm.ir.Op.get(op).get_attr("FLegalize").same_as(f), op
assert "TVM_NUM_THREADS" not in os.environ
print("ok")
"""
    env = {k: v for k, v in __import__("os").environ.items() if k != "TVM_NUM_THREADS"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-3000:]
