"""Which ONNX simplifier tvm-fxp's import uses: onnxslim, onnxsim and onnxruntime's offline basic optimization
compared on exported graphs, by what they fold and how fast, and whether TVM's importer then takes the graph.

Graphs: the exported model-zoo topologies the onnx package ships (``onnx/backend/test/data/light``: ResNet-50,
SqueezeNet, DenseNet-121, Inception v1/v2, ShuffleNet at 1x3x224x224, weights computed by ConstantOfShape),
a TensorFlow-style squeeze-and-excite block whose Reshape targets are computed (``tests/face/test_real_models.py``),
and EfficientNet-Lite0 exported by torch (TF "same" padding as Pad subgraphs) when the ``imagenet`` extra is
installed.  Each tool gets the graph with its input shape fixed; times are medians of 3 runs.

    .venv/bin/python bench/simplifiers.py        # -> bench/results/simplifiers.json (onnxsim: pip install onnxsim)
"""

from __future__ import annotations

import copy
import datetime
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import onnx

ROOT = Path(__file__).resolve().parents[1]
SHAPE_OPS = {"Shape", "Gather", "Cast", "Unsqueeze", "Slice", "ConstantOfShape", "Range", "Expand"}


def _fix(m, shape):
    inits = {i.name for i in m.graph.initializer}
    inp = [i for i in m.graph.input if i.name not in inits][0]
    for d, s in zip(inp.type.tensor_type.shape.dim, shape):
        d.Clear()
        d.dim_value = s
    return m


def _onnxslim(m):
    import onnxslim

    from tvm_fxp.api import SLIM_KEPT_FOR_PREPARE

    return onnxslim.slim(m, skip_fusion_patterns=SLIM_KEPT_FOR_PREPARE)


def _onnxsim(m):
    import onnxsim

    return onnxsim.simplify(m)[0]


def _ort_basic(m):
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as d:
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        so.optimized_model_filepath = os.path.join(d, "o.onnx")
        ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
        return onnx.load(so.optimized_model_filepath)


TOOLS = {"onnxslim": _onnxslim, "onnxsim": _onnxsim, "ort_basic": _ort_basic}


def _tvm_imports(m) -> bool | str:
    from tvm.relax.frontend.onnx import from_onnx

    try:
        from_onnx(m, keep_params_in_input=False)
        return True
    except Exception as e:
        return str(e).strip().splitlines()[-1][:120]


def graphs() -> dict:
    out = {}
    zoo = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"
    for n in ("resnet50", "squeezenet", "densenet121", "inception_v1", "inception_v2", "shufflenet"):
        if (zoo / f"light_{n}.onnx").exists():
            out[n] = (onnx.load(str(zoo / f"light_{n}.onnx")), [1, 3, 224, 224])
    sys.path.insert(0, str(ROOT / "tests"))
    from test_real_models import se_block_model

    out["tf_style_se_block"] = (se_block_model(), [1, 3, 32, 32])
    try:
        sys.path.insert(0, str(ROOT / "examples"))
        from pretrained_imagenet import export_model

        with tempfile.TemporaryDirectory() as d:
            path, _ = export_model(Path(d))
            out["efficientnet_lite0_torch_export"] = (onnx.load(str(path)), [1, 3, 224, 224])
    except SystemExit:
        pass
    return out


def main() -> int:
    results = {}
    for name, (model, shape) in graphs().items():
        model = _fix(model, shape)
        row = {"nodes": len(model.graph.node), "shape_nodes": sum(n.op_type in SHAPE_OPS for n in model.graph.node),
               "tvm_imports_original": _tvm_imports(copy.deepcopy(model)) is True}
        for tool, fn in TOOLS.items():
            try:
                times = []
                for _ in range(3):
                    t = time.perf_counter()
                    out = fn(copy.deepcopy(model))
                    times.append(time.perf_counter() - t)
            except ImportError:
                row[tool] = "not installed"
                continue
            except Exception as e:
                row[tool] = f"failed: {type(e).__name__}: {str(e)[:120]}"
                continue
            row[tool] = {"nodes": len(out.graph.node), "shape_nodes": sum(n.op_type in SHAPE_OPS for n in out.graph.node),
                         "seconds": round(statistics.median(times), 3), "tvm_imports": _tvm_imports(out)}
        results[name] = row
        print(name, json.dumps(row), flush=True)
    totals = {}
    for tool in TOOLS:
        rows = [r[tool] for r in results.values() if isinstance(r.get(tool), dict)]
        totals[tool] = {"graphs": len(rows), "shape_nodes_left": sum(r["shape_nodes"] for r in rows),
                        "nodes_left": sum(r["nodes"] for r in rows), "seconds": round(sum(r["seconds"] for r in rows), 3),
                        "tvm_imports": sum(r["tvm_imports"] is True for r in rows)}
    out = {"date": datetime.date.today().isoformat(), "graphs": results, "totals": totals,
           "choice": "onnxslim, with its batch-norm/scale/Gemm fusions switched off (Prepare folds those in float64, "
                     "tested against onnxruntime) and the original node order restored: on every graph here each tool "
                     "folds every shape computation and TVM imports the result; the nodes the others remove beyond "
                     "that are the batch-norm fusions Prepare does itself; onnxslim is the slowest of the three "
                     "(seconds in totals) but lets those fusions be switched off by name and keeps plain ONNX ops"}
    (ROOT / "bench" / "results" / "simplifiers.json").write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
