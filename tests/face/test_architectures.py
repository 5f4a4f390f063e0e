"""The classic ImageNet CNN families end to end: import, Prepare, calibrate, uniform 8- and 4-bit plans,
Annotate, Simulate, Realize, build, and the simulated and integer graphs agreeing bit for bit.

Every model is generated here with onnx.helper (``tests/onnx_graphs.py``) with random He-initialised weights
at a reduced width and input size that keeps the architecture; the families are spread over opsets 7..14 and
the ways exporters write weights (initializers, Constant nodes, constant subgraphs), fully connected layers
(Gemm, MatMul + Add) and flatten (Flatten, Reshape, Shape/Slice/Concat/Reshape).  The float model is checked
against onnxruntime first, so the rewrites of Prepare are checked as well as the quantization.

Compile time dominates (LLVM, three modules per family), so the families compile at LLVM ``opt-level=0``
(``FAST_TARGET``; bit-exactness does not depend on LLVM's optimisations, and the integer-only structure is
checked on the Relax graph); VGG compiles for the default host target as users do (``tvm_fxp.build``), and
so do the reference models and op tests elsewhere.  The full-depth ResNet-50 at 224x224 is
``examples/resnet50_synthetic.py`` (and the slow-marked test here).
"""

from __future__ import annotations

import collections

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import tvm
from tvm import relax

import tvm_fxp
from tvm_fxp.calibrate import TensorStats, probe_module
from tvm_fxp.methods import uniform
from tvm_fxp.passes import float_ops_in_integer_graph
from tvm_fxp.passes.relax_utils import main_bindings, op_name
from onnx_graphs import (Net, alexnet, densenet, inception, mobilenet, resnet50, save, shufflenet, squeezenet,
                         vgg)


# family -> (builder, image size, builder kwargs, Net kwargs, {layer op: count} the analysis must find)
FAMILIES = {
    "alexnet": (alexnet, 67, {}, dict(opset=7, fc="gemm", flatten="reshape"), {"lrn": 2, "matmul": 3}),
    "zfnet": (alexnet, 48, {"variant": "zfnet"}, dict(opset=9, weights="constant", flatten="shape"), {"lrn": 2}),
    "vgg": (vgg, 32, {"cfg": (32, "M", 64, "M", 128, 128, "M", 256, "M"), "width": 1 / 4},
            dict(opset=11, weights="subgraph", fc="matmul"), {"conv2d": 5, "matmul": 3}),
    "inception_v1": (inception, 48, {"modules": 2}, dict(opset=12, flatten="shape"), {"concat": 2, "lrn": 2}),
    "inception_v2": (inception, 48, {"version": 2, "modules": 2}, dict(opset=13, weights="constant", fc="matmul"),
                     {"concat": 2, "avgpool": 3}),
    "resnet50": (resnet50, 32, {"width": 1 / 8, "blocks": (2, 1, 1, 1)}, dict(opset=13), {"add": 5}),
    "densenet": (densenet, 24, {"growth": 6, "blocks": (3, 3)}, dict(opset=10, weights="subgraph"),
                 {"concat": 6, "avgpool": 1}),
    "squeezenet": (squeezenet, 48, {}, dict(opset=13, flatten="flatten"), {"concat": 6, "mean": 1}),
    "shufflenet": (shufflenet, 32, {"repeats": (2, 1, 1)}, dict(opset=11, flatten="reshape"),
                   {"avgpool": 3, "add": 1}),
    "mobilenet_v2": (mobilenet, 32, {"repeats": (1, 2, 1, 1, 0)}, dict(opset=8, weights="constant"), {"add": 1}),
    "mobilenet_v3": (mobilenet, 32, {"version": 3, "repeats": (1, 0, 1, 1, 0)},
                     dict(opset=14, flatten="shape", fc="matmul"), {"mul": 2, "table": 5}),
    "mobilenet_v3_opset13": (mobilenet, 32, {"version": 3, "repeats": (0, 0, 1, 1, 0)}, dict(opset=13),
                             {"mul": 2, "table": 5}),
}


def _model(tmp_path, family):
    build, image, kwargs, net_kwargs, _ = FAMILIES[family]
    g = Net([1, 3, image, image], seed=7, **net_kwargs)
    return save(g.model(build(g, image, **kwargs)), tmp_path, f"{family}.onnx"), image


def _ort(path, x, extra_outputs=()):
    """onnxruntime outputs: the model's, then ``extra_outputs`` (intermediate tensors by name)."""
    m = onnx.load(str(path))
    for name in extra_outputs:
        m.graph.output.append(onnx.ValueInfoProto(name=name))
    sess = ort.InferenceSession(m.SerializeToString())
    return sess.run(None, {"input": x})


FAST_TARGET = tvm.target.Target({"kind": "llvm", "opt-level": 0})
DEFAULT_TARGET_FAMILIES = {"vgg"}


def _vm(mods: dict, target, workdir):
    """One compiled module holding every ``main`` of ``mods`` under its key (kernels shared where equal),
    exported and loaded (faster than LLVM's JIT for modules of hundreds of kernels)."""
    fns = {name: m["main"].with_attr("global_symbol", name) for name, m in mods.items()}
    path = str(workdir / f"{'_'.join(mods)}.so")
    tvm_fxp.build(tvm.IRModule(fns), target).export_library(path)
    return relax.VirtualMachine(tvm.runtime.load_module(path), tvm.cpu())


def _softmax_input(path):
    m = onnx.load(str(path))
    last = m.graph.node[-1]
    return last.input[0] if last.op_type == "Softmax" else None


# the default run covers opsets 7, 8 and 10..14, every weight form (initializer, Constant, subgraph), LRN, concat, residual,
# depthwise and flatten form once; the slow run every family
DEFAULT_FAMILIES = {"alexnet", "vgg", "mobilenet_v3", "mobilenet_v2"}   # concat branches: yolo, unet, squeezenet CLI


@pytest.mark.parametrize("family", [f if f in DEFAULT_FAMILIES else pytest.param(f, marks=pytest.mark.slow)
                                    for f in FAMILIES])
def test_family_end_to_end(tmp_path, family):
    path, image = _model(tmp_path, family)
    rng = np.random.default_rng(0)
    calib = rng.normal(0, 1, (8, 3, image, image)).astype(np.float32)
    wild = rng.normal(0, 3, (4, 3, image, image)).astype(np.float32)   # beyond the calibrated ranges
    prepared, lg = tvm_fxp.load_model(path)

    ops = collections.Counter(layer.op for layer in lg.layers.values())
    for op, n in FAMILIES[family][4].items():
        assert ops[op] == n, (op, ops)
    prepared_ops = collections.Counter(op_name(b.value) for b in main_bindings(prepared["main"]))
    assert not set(prepared_ops) & {"relax.nn.dropout", "relax.stack", "relax.subtract", "relax.nn.batch_norm"}
    tables = {v for l in lg.layers.values() if l.op == "table" for v in l.attrs["match"].inner + [l.anchor]}
    divides = [b.var for b in main_bindings(prepared["main"]) if op_name(b.value) == "relax.divide"]
    assert len([v for v in divides if v not in tables]) == ops["lrn"]   # the others: folded, a conv or in a table

    # the prepared float graph still computes the ONNX model (onnxruntime), logits before any softmax
    target = None if family in DEFAULT_TARGET_FAMILIES else FAST_TARGET
    vm = _vm({"probe": probe_module(prepared, lg)}, target, tmp_path)
    probe = [o.numpy() for o in vm["probe"](tvm.runtime.tensor(calib))]
    out_key = lg.layers[lg.output].output_key
    keys = [layer.output_key for layer in lg.layers.values()]
    logits = probe[keys.index(out_key)]
    sm_in = _softmax_input(path)
    ref = _ort(path, calib, [sm_in] if sm_in else [])[-1].reshape(logits.shape)
    np.testing.assert_allclose(logits, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())
    stats = {k: TensorStats() for k in keys}
    for k, o in zip(keys, probe):
        stats[k].update(o, channel_axis=1 if o.ndim > 1 else None)

    qs = {bits: tvm_fxp.bind_plan(prepared, lg, uniform.allocate(lg, stats, tvm_fxp.Uniform(bits)))
          for bits in (8, 4)}
    real_mods = {f"real{b}": q.realized() for b, q in qs.items()}
    for name, m in real_mods.items():
        assert float_ops_in_integer_graph(m) == [], name
    sim = _vm({f"sim{b}": q.simulated() for b, q in qs.items()}, target, tmp_path)
    real = _vm(real_mods, target, tmp_path)
    float_out = _ort(path, calib)[0]
    err = {}
    for bits in (8, 4):
        for x in (calib, wild):
            a = sim[f"sim{bits}"](tvm.runtime.tensor(x)).numpy()
            b = real[f"real{bits}"](tvm.runtime.tensor(x)).numpy()
            np.testing.assert_array_equal(a, b, err_msg=f"{family} {bits}-bit: simulation != integer graph")
        assert np.unique(b).size > 4          # a non-degenerate output
        err[bits] = np.abs(sim[f"sim{bits}"](tvm.runtime.tensor(calib)).numpy() - float_out).mean()
    assert err[8] < err[4], err                                    # fewer bits, measurably further from float
    assert err[8] < 0.1 * np.abs(float_out).mean() + 0.02, err     # 8 bits stay close to the float model


LIGHT = {"resnet50": {"add": 16, "conv2d": 53, "matmul": 1}, "shufflenet": {"add": 13, "concat": 3},
         "squeezenet": {"concat": 8, "mean": 1}, "densenet121": {"concat": 58, "avgpool": 3},
         "inception_v1": {"concat": 9, "lrn": 2}, "inception_v2": {"concat": 10, "avgpool": 8},
         "bvlc_alexnet": {"lrn": 2, "matmul": 3}, "vgg19": {"conv2d": 16, "matmul": 3}, "zfnet512": {"lrn": 2}}
BIG = {"bvlc_alexnet", "vgg19", "zfnet512"}   # 60M-140M weights: seconds each to materialise


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in BIG else n for n in LIGHT])
def test_model_zoo_light_graph(name):
    """The "light" model-zoo graphs the onnx package ships (the published topologies at 224x224, opset 9,
    initializers listed as inputs, weights computed by ConstantOfShape) import, prepare and analyze into the
    expected layers."""
    import os

    path = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "light", f"light_{name}.onnx")
    if not os.path.exists(path):
        pytest.skip("this onnx build ships no light model-zoo graphs")
    prepared, lg = tvm_fxp.load_model(path)
    ops = collections.Counter(layer.op for layer in lg.layers.values())
    for op, n in LIGHT[name].items():
        assert ops[op] == n, (op, ops)


# full depth (slow): the published block counts at a reduced width and input size
FULL = {
    "alexnet": (alexnet, 99, {"width": 1 / 4, "fc": 1024}),
    "vgg": (vgg, 32, {"width": 1 / 4}),
    "inception_v1": (inception, 64, {"modules": 3}),
    "inception_v2": (inception, 64, {"version": 2, "modules": 3}),
    "resnet50": (resnet50, 64, {"width": 1 / 4}),
    "densenet": (densenet, 32, {"growth": 8, "blocks": (6, 12, 24, 16)}),
    "squeezenet": (squeezenet, 96, {"width": 1 / 2}),
    "shufflenet": (shufflenet, 64, {"repeats": (4, 8, 4), "channels": (48, 96, 192)}),
    "mobilenet_v2": (mobilenet, 64, {"width": 1 / 2, "repeats": (1, 2, 3, 4, 3)}),
    "mobilenet_v3": (mobilenet, 64, {"version": 3, "width": 1 / 2, "repeats": (1, 2, 3, 4, 3)}),
}


@pytest.mark.slow
@pytest.mark.parametrize("family", list(FULL))
def test_family_full_depth_bit_exact(tmp_path, family):
    build, image, kwargs = FULL[family]
    g = Net([1, 3, image, image], seed=3)
    path = save(g.model(build(g, image, **kwargs)), tmp_path, f"{family}.onnx")
    x = np.random.default_rng(1).normal(0, 1, (8, 3, image, image)).astype(np.float32)
    for bits in (8, 4):
        q = tvm_fxp.quantize(path, x, tvm_fxp.Uniform(bits), progress=False)
        real_mod = q.realized()
        assert float_ops_in_integer_graph(real_mod) == []
        sim = tvm_fxp.Runner(tvm_fxp.build(q.simulated())).run(x)
        real = tvm_fxp.Runner(tvm_fxp.build(real_mod)).run(x)
        np.testing.assert_array_equal(sim, real)


@pytest.mark.slow
def test_resnet50_224_synthetic_within_ten_minutes(tmp_path):
    """``examples/resnet50_synthetic.py``: ResNet-50 at 224x224, uniform 8-bit, 8 synthetic calibration
    images, simulated == integer graph, in under 10 minutes (it prints per-step times and peak memory)."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[2] / "examples" / "resnet50_synthetic.py"
    out = tmp_path / "r50.json"
    proc = subprocess.run([sys.executable, str(script), "--out", str(out)], capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads(out.read_text())
    print(json.dumps(r))
    assert r["bit_exact"] and r["float_ops_in_integer_graph"] == 0 and r["layers"] == 72
    assert r["macs_per_image"] > 4e9 and r["wall_s"] < 600


# ---- every allocation method on the families --------------------------------------------------------------------




def _method_configs():
    from tvm_fxp.methods.debruin2020 import DeBruin2020
    from tvm_fxp.methods.fxpqnet import FxpQNet
    from tvm_fxp.methods.goyal2021 import Goyal2021
    from tvm_fxp.methods.lin2016 import Lin2016
    from tvm_fxp.methods.mellempudi2017 import Mellempudi2017

    return {"lin2016": Lin2016(), "goyal2021": Goyal2021(max_bits=8), "fxpqnet": FxpQNet(budget=0.07),   # label-free on 16 random inputs: one flip is 6 points
            "debruin2020": DeBruin2020(acc_bits=20, max_bits=8),
            "mellempudi2017": Mellempudi2017(cluster=4, weights="4bit")}


def _every_method(tmp_path, family, seconds):
    """Each method plans the family (searches scored label-free against the float model on held-out random
    inputs, each capped at ``seconds``), and each plan realizes integer-only and bit-exact with its simulation;
    so does a bias-corrected 6-bit plan."""
    from tvm_fxp.api import make_evaluator
    from tvm_fxp.calibrate import calibrate
    from tvm_fxp.methods import get_method, needs_evaluation

    path, image = _model(tmp_path, family)
    rng = np.random.default_rng(0)
    calib = rng.normal(0, 1, (8, 3, image, image)).astype(np.float32)
    held_out = rng.normal(0, 1, (16, 3, image, image)).astype(np.float32)
    prepared, lg = tvm_fxp.load_model(path)
    stats = calibrate(prepared, lg, calib, progress=False)
    sims, reals = {}, {}
    for name, config in _method_configs().items():
        ev = make_evaluator(prepared, lg, stats, held_out, None, seconds, progress=False) \
            if needs_evaluation(config) else None
        plan = get_method(name).allocate(lg, stats, config, ev)
        q = tvm_fxp.bind_plan(prepared, lg, plan, stats)
        sims[name] = q.simulated()
        reals[name] = q.realized("narrow" if name == "debruin2020" else "wide")
        assert float_ops_in_integer_graph(reals[name]) == [], name
        if name == "debruin2020":
            assert all(p.bound < 1 << 19 for p in plan.proofs.values())
    # the label-free bias correction on the family's graph (a 6-bit plan, every bias with a conv/matmul corrected)
    from tvm_fxp.methods.correction import corrected_plan
    from tvm_fxp.methods.uniform import Uniform, allocate

    ev = make_evaluator(prepared, lg, stats, held_out, None, None, progress=False)
    plan = corrected_plan(lg, allocate(lg, stats, Uniform(6)), ev.sim, ev.inputs)
    assert set(plan.bias_correction) == {l.name for l in lg.layers.values() if l.weight is not None
                                         and l.bias is not None}
    q = tvm_fxp.bind_plan(prepared, lg, plan, stats)
    sims["corrected"], reals["corrected"] = q.simulated(), q.realized()
    assert float_ops_in_integer_graph(reals["corrected"]) == []
    sim, real = _vm(sims, FAST_TARGET, tmp_path), _vm(reals, FAST_TARGET, tmp_path)
    for name in sims:
        for x in (calib, held_out):
            np.testing.assert_array_equal(sim[name](tvm.runtime.tensor(x)).numpy(),
                                          real[name](tvm.runtime.tensor(x)).numpy(), err_msg=f"{family} {name}")


@pytest.mark.slow   # every method is also realized bit-exact on both reference models (tests/methods)
def test_every_method_on_a_family(tmp_path):
    _every_method(tmp_path, "mobilenet_v3", seconds=2)


@pytest.mark.slow
@pytest.mark.parametrize("family", list(FAMILIES))
def test_every_method_on_every_family(tmp_path, family):
    _every_method(tmp_path, family, seconds=30)


# ---- a detector and a segmenter ---------------------------------------------------------------------------------

# family -> (builder, image size, builder kwargs, {layer op: count} the analysis must find)
DENSE = {
    "yolo": ("yolo", 32, {"width": 1 / 16}, {"table": 56, "concat": 14, "add": 4, "conv2d": 56}),
    "unet": ("unet", 32, {"width": 1 / 8}, {"table": 1, "concat": 3, "conv2d": 19}),
}


def _relative_l2(outs, refs) -> float:
    return float(np.sqrt(sum(np.sum((o - r) ** 2) for o, r in zip(outs, refs)) / sum(np.sum(r ** 2) for r in refs)))


@pytest.mark.parametrize("family,search", [("yolo", False), pytest.param("yolo", True, marks=pytest.mark.slow),
                                           ("unet", True)])
def test_detector_and_segmenter_end_to_end(tmp_path, family, search):
    """YOLO-style (focus stem of stride-2 Slices, C3 blocks with SiLU, SPP max pools, nearest Resize, PAN concats,
    three Sigmoid-decoded heads) and U-Net-style (ConvTranspose and bilinear Resize decoders, skip concats,
    per-pixel Sigmoid): the prepared float graph equals onnxruntime's on every output; an 8-bit plan (per-channel
    weights) and a searched plan (goyal2021, label-free, time-limited) realize integer-only without float islands
    (SiLU and Sigmoid are lookup tables) and bit-exact with their simulation on every output; the 8-bit outputs
    stay within 3% relative L2 of the float model on image-like random inputs (printed).  The searched YOLO
    plan is in the slow run (its scorer compiles the whole detector for the host: ~2 minutes)."""
    import onnx_graphs
    from tvm_fxp.api import make_evaluator
    from tvm_fxp.methods.goyal2021 import Goyal2021, allocate as goyal

    name, image, kwargs, expected = DENSE[family]
    g = Net([1, 3, image, image], seed=7, opset=13)
    outs = getattr(onnx_graphs, name)(g, image, **kwargs)
    outs = outs if isinstance(outs, list) else [outs]
    path = save(onnx_graphs.detection_model(g, outs, image), tmp_path, f"{family}.onnx")
    rng = np.random.default_rng(0)
    calib = rng.random((8, 3, image, image), dtype=np.float32)        # image-like: pixels in [0, 1)
    held_out = rng.random((8, 3, image, image), dtype=np.float32)
    prepared, lg = tvm_fxp.load_model(path)
    ops = collections.Counter(layer.op for layer in lg.layers.values())
    assert {op: ops[op] for op in expected} == expected, ops
    assert len(lg.outputs) == len(outs) and tvm_fxp.passes.float_islands(lg) == []

    float_ref = ort.InferenceSession(str(path)).run(None, {"input": held_out})
    # one compiled probe: every layer output, for the statistics and (its returned layers) against onnxruntime
    vm = _vm({"probe": probe_module(prepared, lg)}, FAST_TARGET, tmp_path)
    keys = [layer.output_key for layer in lg.layers.values()]
    stats = {k: TensorStats() for k in keys}
    for x in (calib, held_out):
        probe = [o.numpy() for o in vm["probe"](tvm.runtime.tensor(x))]
        for k, o in zip(keys, probe):
            stats[k].update(o, channel_axis=1)
    for o, r in zip(lg.outputs, float_ref):      # the held-out pass is the last one
        a = probe[keys.index(lg.layers[o].output_key)]
        np.testing.assert_allclose(a, r, rtol=1e-4, atol=1e-4 * np.abs(r).max())
    plans = {"uniform8": uniform.allocate(lg, stats, tvm_fxp.Uniform(8, per_channel_weights=True))}
    if search:
        ev = make_evaluator(prepared, lg, stats, held_out, None, 10, progress=False)
        plans["goyal2021"] = goyal(lg, stats, Goyal2021(max_bits=8), ev)
    qs = {k: tvm_fxp.bind_plan(prepared, lg, p, stats) for k, p in plans.items()}
    reals = {k: q.realized() for k, q in qs.items()}
    for k, m in reals.items():
        assert float_ops_in_integer_graph(m) == [], k
    sim = real = _vm({**{f"sim_{k}": q.simulated() for k, q in qs.items()},
                      **{f"real_{k}": m for k, m in reals.items()}}, FAST_TARGET, tmp_path)
    err = {}
    for k in qs:
        for x in (calib, held_out):
            a, b = sim[f"sim_{k}"](tvm.runtime.tensor(x)), real[f"real_{k}"](tvm.runtime.tensor(x))
            a, b = ([a], [b]) if hasattr(a, "numpy") else (list(a), list(b))
            assert len(b) == len(outs)
            for i, (ai, bi) in enumerate(zip(a, b)):
                np.testing.assert_array_equal(ai.numpy(), bi.numpy(), err_msg=f"{family} {k} output {i}")
        err[k] = _relative_l2([o.numpy() for o in b], float_ref)
    print(f"{family}: relative L2 vs float on {len(held_out)} random images: "
          + ", ".join(f"{k} {v:.4f}" for k, v in err.items()))
    assert err["uniform8"] <= 0.03, err
    assert not search or err["goyal2021"] < 0.5, err
