"""Models as they are published: a fixed batch (1x3xHxW, 4x3xHxW), shapes computed at run time, image folders.

The architecture families of ``tests/onnx_graphs.py`` are exported here with a *fixed* batch, the way nearly every
published ONNX model has it, and run through the CLI end to end (quantize, evaluate): bit-exact, integer-only,
every input counted (odd numbers of inputs, so the last chunk is padded and trimmed).
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import tvm_fxp
from tvm_fxp.batching import Batching, concat, run_batched
from tvm_fxp.calibrate import calibrate
from tvm_fxp.cli import main
from onnx_graphs import Net, save
from .test_architectures import FAMILIES


# ---- batching (numpy only) ------------------------------------------------------------------------------------

def test_fixed_batch_chunks_pad_and_trim():
    seen = []

    def fn(x):
        seen.append(x.copy())
        return [x.sum(axis=(1, 2)), np.float32(len(x))]   # a per-input output and a per-chunk scalar

    x = np.arange(7 * 2 * 3, dtype=np.float32).reshape(7, 2, 3)
    out = run_batched(fn, x, Batching(4))
    assert [len(s) for s in seen] == [4, 4]                       # every chunk is exactly the model's batch
    np.testing.assert_array_equal(seen[1][3], x[6])              # padded with copies of the last input
    np.testing.assert_array_equal(concat([o[0] for o in out]), x.sum(axis=(1, 2)))   # trimmed, none dropped
    dyn = run_batched(lambda c: c * 2, x, Batching(None, 3))
    assert [len(c) for c in dyn] == [3, 3, 1]
    assert Batching(1).describe()["kind"] == "fixed" and Batching(None, 8).describe()["chunk"] == 8


# ---- fixed-batch models ---------------------------------------------------------------------------------------

def _family(tmp_path, family, batch, image=None):
    build, size, kwargs, net_kwargs, _ = FAMILIES[family]
    image = image or size
    g = Net([batch, 3, image, image], seed=7, **net_kwargs)
    return save(g.model(build(g, image, **kwargs), dims=[batch, 3, image, image]), tmp_path,
                f"{family}_b{batch}.onnx")


@pytest.mark.slow   # fixed batches stay covered by the squeezenet-4 CLI test and the batching unit tests
def test_fixed_batch_statistics_equal_the_dynamic_model(tmp_path):
    """The same network with batch fixed at 4 and with a dynamic batch: identical calibration statistics and
    identical per-layer means over 10 inputs (the padding of the last chunk is never counted)."""
    build, image, kwargs, net_kwargs, _ = FAMILIES["squeezenet"]
    paths = {}
    for name, dims in (("fixed", [4, 3, image, image]), ("dynamic", ["N", 3, image, image])):
        g = Net([4, 3, image, image], seed=7, **net_kwargs)
        paths[name] = save(g.model(build(g, image, **kwargs), dims=dims), tmp_path, f"{name}.onnx")
    x = np.random.default_rng(0).random((10, 3, image, image), dtype=np.float32)
    stats, means = {}, {}
    for name, p in paths.items():
        prepared, lg = tvm_fxp.load_model(p)
        assert tvm_fxp.model_batch(prepared) == (4 if name == "fixed" else None)
        stats[name] = calibrate(prepared, lg, x, batch_size=3, progress=False)
        from tvm_fxp.methods.evaluate import uniform_plan
        from tvm_fxp.passes.plan_scorer import PlanScorer

        plan = uniform_plan(lg, stats[name], 8)
        ev = PlanScorer(prepared, plan, tvm_fxp.build, batch_size=3)
        means[name] = (ev.layer_means(plan, x), ev.outputs(plan, x))
    for k, s in stats["fixed"].items():
        d = stats["dynamic"][k]
        assert s.count == d.count and s.min == d.min and s.max == d.max, k
        np.testing.assert_allclose(s.mean, d.mean, rtol=1e-9, err_msg=k)
    for layer, m in means["fixed"][0].items():
        np.testing.assert_allclose(m, means["dynamic"][0][layer], rtol=1e-9, atol=1e-12, err_msg=layer)
    np.testing.assert_array_equal(means["fixed"][1], means["dynamic"][1])


def _cli_end_to_end(tmp_path, model, batch, calib="synthetic", extra=(), eval_size=7):
    out = tmp_path / f"out_{model.stem}"
    code = main(["quantize", str(model), "--calib", calib, "--calib-size", "10", "--eval-size", str(eval_size),
                 "--out", str(out), "--quiet", *extra])
    assert code == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["bit_exact"] is True and s["float_ops_in_integer_graph"] == 0
    assert s["batching"]["kind"] == ("fixed" if batch else "dynamic") and s["batching"]["model_batch"] == batch
    assert s["evaluated_inputs"] == eval_size                    # the last, padded chunk is trimmed, not dropped
    assert s["onnxruntime_check"]["max_rel_diff"] < 1e-4         # prepared float model == onnxruntime on the file
    code = main(["evaluate", str(out), "--data", calib, "--eval-size", "5", "--quiet", *extra])
    assert code == 0
    e = json.loads((out / "evaluation.json").read_text())
    assert e["bit_exact"] is True and e["evaluated_inputs"] == 5
    return s


CLI_FAMILIES = [("squeezenet", 4)]     # batch 1 through the CLI: test_cli_calibrates_on_an_image_folder (vgg b1)
SLOW_CLI_FAMILIES = [(f, b) for f in FAMILIES for b in (1, 4) if (f, b) not in CLI_FAMILIES]


@pytest.mark.parametrize("family,batch", CLI_FAMILIES)
def test_cli_on_fixed_batch_family(tmp_path, family, batch):
    _cli_end_to_end(tmp_path, _family(tmp_path, family, batch), batch)


@pytest.mark.slow
@pytest.mark.parametrize("family,batch", SLOW_CLI_FAMILIES)
def test_cli_on_every_fixed_batch_family(tmp_path, family, batch):
    _cli_end_to_end(tmp_path, _family(tmp_path, family, batch), batch)


@pytest.mark.slow
def test_python_api_on_a_fixed_batch_model(tmp_path):
    path = _family(tmp_path, "resnet50", 4)
    image = FAMILIES["resnet50"][1]
    x = np.random.default_rng(3).random((6, 3, image, image), dtype=np.float32)
    q = tvm_fxp.quantize(path, x, tvm_fxp.Uniform(8), progress=False)
    assert q.batch == 4
    sim = tvm_fxp.Runner(tvm_fxp.build(q.simulated()), batch=q.batch).run(x)
    real = tvm_fxp.Runner(tvm_fxp.build(q.realized()), batch=q.batch).run(x)
    assert sim.shape[0] == 6
    np.testing.assert_array_equal(sim, real)
    with pytest.raises(ValueError, match="fixed batch size"):
        tvm_fxp.Runner(tvm_fxp.build(q.realized())).run(x)


def test_torch_export_with_fixed_batch(tmp_path):
    torch = pytest.importorskip("torch", reason="torch (the train extra) exports the model")
    nn = torch.nn
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
                        nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10)).eval()
    path = tmp_path / "torch_b4.onnx"
    torch.onnx.export(net, torch.randn(4, 3, 16, 16), str(path), input_names=["input"], output_names=["out"],
                      opset_version=13, dynamo=False)
    _cli_end_to_end(tmp_path, path, 4)


# ---- computed shapes -------------------------------------------------------------------------------------------

def se_block_model(channels=8, seed=0) -> onnx.ModelProto:
    """Conv, then a squeeze-and-excite block written the way TensorFlow exporters write it: the Reshape target
    of the excitation is computed at run time, Shape -> Cast(int32) -> Slice -> Concat -> Cast(int64); the input
    has dynamic height and width; then global pooling and a classifier whose Reshape target is computed too."""
    rng = np.random.default_rng(seed)
    c = channels
    init = [numpy_helper.from_array(a, n) for n, a in [
        ("w1", rng.normal(0, 0.5, (c, 3, 3, 3)).astype(np.float32)),
        ("b1", rng.normal(0, 0.1, c).astype(np.float32)),
        ("w_se", rng.normal(0, 0.5, (c, c)).astype(np.float32)),
        ("w_fc", rng.normal(0, 0.5, (c, 10)).astype(np.float32)),
        ("zero", np.array([0], np.int64)), ("two", np.array([2], np.int64)), ("one", np.array([1], np.int64)),
        ("ones32", np.array([1, 1], np.int32)), ("minus1", np.array([-1], np.int64))]]
    nodes = [
        helper.make_node("Conv", ["input", "w1", "b1"], ["c1"], pads=[1] * 4, strides=[2, 2], name="conv"),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu"),
        helper.make_node("GlobalAveragePool", ["r1"], ["squeeze"], name="se_pool"),
        helper.make_node("Flatten", ["squeeze"], ["sq_flat"], name="se_flatten"),
        helper.make_node("MatMul", ["sq_flat", "w_se"], ["excite"], name="se_fc"),
        helper.make_node("HardSigmoid", ["excite"], ["gate"], name="se_gate"),
        helper.make_node("Shape", ["r1"], ["shape"], name="se_shape"),
        helper.make_node("Cast", ["shape"], ["shape32"], to=TensorProto.INT32, name="se_cast32"),
        helper.make_node("Slice", ["shape32", "zero", "two"], ["nc"], name="se_slice"),
        helper.make_node("Concat", ["nc", "ones32"], ["target32"], axis=0, name="se_concat"),
        helper.make_node("Cast", ["target32"], ["target"], to=TensorProto.INT64, name="se_cast64"),
        helper.make_node("Reshape", ["gate", "target"], ["gate4"], name="se_reshape"),
        helper.make_node("Mul", ["r1", "gate4"], ["y"], name="se_scale"),
        helper.make_node("GlobalAveragePool", ["y"], ["pooled"], name="pool"),
        helper.make_node("Shape", ["pooled"], ["pshape"], name="fc_shape"),
        helper.make_node("Slice", ["pshape", "zero", "one"], ["batch"], name="fc_slice"),
        helper.make_node("Concat", ["batch", "minus1"], ["ftarget"], axis=0, name="fc_concat"),
        helper.make_node("Reshape", ["pooled", "ftarget"], ["flat"], name="fc_reshape"),
        helper.make_node("MatMul", ["flat", "w_fc"], ["logits"], name="fc")]
    g = helper.make_graph(nodes, "se", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, "H", "W"])],
                          [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 10])], init)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    return m


def test_se_block_with_computed_reshape_and_dynamic_hw(tmp_path, capsys):
    path = save(se_block_model(), tmp_path, "se_dynhw.onnx")
    # TVM's importer alone cannot take the computed Reshape target: the error names the node and the fix
    code = main(["quantize", str(path), "--calib", "synthetic", "--input-shape", "1,3,32,32", "--no-simplify",
                 "--out", str(tmp_path / "raw"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "se_reshape" in err and "Reshape" in err
    # without --input-shape the dynamic dims are named
    code = main(["quantize", str(path), "--calib", "synthetic", "--out", str(tmp_path / "noshape"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "'input'" in err and "--input-shape" in err
    s = _cli_end_to_end(tmp_path, path, 1, extra=["--input-shape", "1,3,32,32"])
    assert s["import"]["nodes_after"] < s["import"]["nodes_before"] and s["input_shape"] == [1, 3, 32, 32]
    assert s["import"]["onnxruntime_check"]["max_rel_diff"] < 1e-5


def test_simplifier_keeps_the_layer_names_of_the_original_order():
    from conftest import model_path

    for name in ("fmnist_vgg", "fmnist_resnet"):
        rec = {}
        _, plain = tvm_fxp.load_model(model_path(name), simplify=False)
        _, slim = tvm_fxp.load_model(model_path(name), record=rec)
        assert [(l.name, l.op, l.inputs) for l in plain.layers.values()] == \
            [(l.name, l.op, l.inputs) for l in slim.layers.values()]
        for a, b in zip(plain.layers.values(), slim.layers.values()):
            if a.weight is not None:
                np.testing.assert_array_equal(a.weight, b.weight)    # Prepare folds batch-norm, bit for bit
        assert rec["tool"].startswith("onnxslim") and rec["onnxruntime_check"]["max_rel_diff"] < 1e-5


# ---- image folders ---------------------------------------------------------------------------------------------

def _write_images(root, classes=("cat", "dog"), per_class=3, size=(40, 36), seed=0):
    from PIL import Image

    rng = np.random.default_rng(seed)
    for c in classes:
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            a = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
            Image.fromarray(a).save(root / c / f"{c}{i}.{'png' if i % 2 else 'jpg'}")
    (root / classes[0] / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")


def test_image_folder_preprocessing_and_labels(tmp_path):
    from PIL import Image

    from tvm_fxp.images import ImageFolder, PRESETS, preprocess_from_args

    _write_images(tmp_path / "imgs", size=(300, 260))
    folder = ImageFolder(tmp_path / "imgs", PRESETS["imagenet"], progress=False)
    assert len(folder.files) == 6 and len(folder.skipped) == 1 and "broken.png" in folder.skipped[0][0]
    assert folder.classes == ["cat", "dog"] and folder.labels.tolist() == [0, 0, 0, 1, 1, 1]
    x = folder.inputs[0:2]
    assert x.shape == (2, 3, 224, 224) and x.dtype == np.float32
    # by hand: short side 260 -> 256 (300 -> 295), centre crop 224, /255, mean/std, CHW
    img = Image.open(folder.files[1]).convert("RGB").resize((295, 256), Image.BILINEAR)
    a = np.asarray(img, np.float32)[16:240, 36:260] / 255.0
    a = (a - np.array([0.485, 0.456, 0.406], np.float32)) / np.array([0.229, 0.224, 0.225], np.float32)
    np.testing.assert_allclose(x[1], a.transpose(2, 0, 1), rtol=1e-5, atol=1e-5)
    # a labels file in the model's class order (first word = the folder name)
    labels = tmp_path / "labels.txt"
    labels.write_text("n0 bird\ndog hound\ncat tabby\n")
    folder = ImageFolder(tmp_path / "imgs", preprocess_from_args("imagenet"), labels, progress=False)
    assert folder.labels.tolist() == [2, 2, 2, 1, 1, 1]
    grey = ImageFolder(tmp_path / "imgs", preprocess_from_args(resize=[20, 24], channels="L", layout="NHWC"),
                       limit=4, progress=False)
    assert grey.inputs[0:4].shape == (4, 20, 24, 1) and len(grey.files) == 4


def test_cli_calibrates_on_an_image_folder(tmp_path, capsys):
    _write_images(tmp_path / "imgs", size=(40, 36))
    path = _family(tmp_path, "vgg", 1)             # input 1x3x32x32
    code = main(["quantize", str(path), "--calib", str(tmp_path / "imgs"), "--resize", "32", "--crop", "32",
                 "--mean", "0.5,0.5,0.5", "--std", "0.25,0.25,0.25", "--out", str(tmp_path / "o"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "1 unreadable files skipped" in err and "broken.png" in err
    s = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert s["calibration"]["inputs"] == 6 and s["evaluated_inputs"] == 6 and s["bit_exact"] is True
    assert s["fxp_top1"] is not None and s["float_top1"] is not None      # labels from the sub-folders
    assert s["preprocess"]["resize"] == [32] and s["preprocess"]["std"] == [0.25, 0.25, 0.25]
    # the wrong size is refused, naming the model's input size and the flags
    code = main(["quantize", str(path), "--calib", str(tmp_path / "imgs"), "--out", str(tmp_path / "o2"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "[3, 36, 40]" in err and "[3, 32, 32]" in err and "--resize" in err


@pytest.mark.slow
def test_pretrained_efficientnet_lite0_on_packaged_photos(tmp_path):
    """``examples/pretrained_imagenet.py`` (the ``imagenet`` extra): the real ImageNet network, exported with a
    fixed batch, quantized from an image folder of the packaged photos, bit-exact and integer-only; the float
    model's classes are the expected ones on the photos it is sure of."""
    pytest.importorskip("efficientnet_lite_pytorch", reason="pip install -e '.[imagenet]'")
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "examples"))
    from pretrained_imagenet import main as example

    out = tmp_path / "results.json"
    assert example(["--out", str(tmp_path / "build"), "--methods", "uniform8_per_channel",
                    "--results", str(out)]) == 0
    row = json.loads(out.read_text())["rows"][0]
    assert row["bit_exact"] is True and row["float_ops_in_integer_graph"] == 0
    assert row["batching"]["model_batch"] == 1 and row["import"]["nodes_after"] < row["import"]["nodes_before"]
    sure = {p["photo"]: p for p in row["photos"] if p["float_p"] > 0.5}
    assert sure["coffee.png"]["float"] == "espresso" and sure["camera.png"]["float"] == "tripod"
    assert all(p["same"] for p in sure.values())          # 8 bits keep every class float is sure of
    assert row["agreement"] >= 0.5
