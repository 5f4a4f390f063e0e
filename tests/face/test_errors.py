"""Bad input gets a clear error naming the file/node and what to do."""

import json

import numpy as np
import onnx
import pytest

import tvm_fxp
from tvm_fxp.calibrate import CalibrationError
from tvm_fxp.cli import main
from tvm_fxp.methods import MethodError
from tvm_fxp.passes import FxpGraphError
from conftest import model_path
from onnx_graphs import GraphBuilder, save


def test_truncated_onnx(tmp_path):
    data = model_path("fmnist_vgg").read_bytes()
    bad = tmp_path / "trunc.onnx"
    bad.write_bytes(data[: len(data) // 3])
    with pytest.raises(tvm_fxp.ModelError, match=r"trunc.onnx.*(not a valid ONNX|fails the ONNX checker|empty graph)"):
        tvm_fxp.import_onnx(bad)


def test_garbage_onnx(tmp_path):
    bad = tmp_path / "garbage.onnx"
    bad.write_bytes(b"this is not a protobuf at all \x00\xff" * 10)
    with pytest.raises(tvm_fxp.ModelError, match="garbage.onnx"):
        tvm_fxp.import_onnx(bad)


def test_missing_file(tmp_path):
    with pytest.raises(tvm_fxp.ModelError, match="does not exist"):
        tvm_fxp.import_onnx(tmp_path / "nope.onnx")


def test_unsupported_op_names_the_node(tmp_path):
    g = GraphBuilder([1, 2, 6, 6])
    x = g.op("Sin", [g.conv("input", 2, 4)])
    path = save(g.model(x), tmp_path)
    with pytest.raises(FxpGraphError, match=r"node .* op relax.sin is not supported by the tvm-fxp realizer"):
        tvm_fxp.load_model(path)


def test_nan_weights(tmp_path):
    g = GraphBuilder([1, 2, 6, 6])
    x = g.conv("input", 2, 4)
    m = g.model(x)
    w = onnx.numpy_helper.to_array(m.graph.initializer[0]).copy()
    w[0, 0, 0, 0] = np.nan
    m.graph.initializer[0].CopyFrom(onnx.numpy_helper.from_array(w, m.graph.initializer[0].name))
    with pytest.raises(tvm_fxp.ModelError, match=r"initializer 'w1' contains NaN/inf"):
        tvm_fxp.import_onnx(save(m, tmp_path))


@pytest.mark.parametrize("data, msg", [
    (np.zeros((0, 1, 28, 28), np.float32), "empty"),
    (np.full((4, 1, 28, 28), np.nan, np.float32), r"NaN/inf \(first at index \(0, 0, 0, 0\)\)"),
    (np.where(np.arange(4 * 784).reshape(4, 1, 28, 28) == 1000, np.inf, 0.5).astype(np.float32), "NaN/inf"),
])
def test_bad_calibration_data(data, msg):
    with pytest.raises(CalibrationError, match=msg):
        tvm_fxp.quantize(model_path("fmnist_vgg"), data, progress=False)


@pytest.mark.parametrize("bits", [0, 1, 17, 32])
def test_uniform_bit_budget_out_of_range(bits):
    with pytest.raises(MethodError, match=r"--bits must be an integer in 2..16"):
        tvm_fxp.Uniform(bits)


def test_plan_from_another_model_is_refused(tmp_path):
    g = GraphBuilder([1, 1, 28, 28])
    path = save(g.model(g.conv("input", 1, 3)), tmp_path)
    x = np.random.default_rng(0).random((4, 1, 28, 28), dtype=np.float32)
    q = tvm_fxp.quantize(path, x, progress=False)
    prepared, lg = tvm_fxp.load_model(model_path("fmnist_vgg"))
    with pytest.raises(tvm_fxp.PlanError, match=r"does not match this model.*missing formats.*another model"):
        tvm_fxp.bind_plan(prepared, lg, q.plan)


def test_bias_finer_than_accumulator_is_refused(tmp_path):
    x = np.random.default_rng(0).random((4, 1, 28, 28), dtype=np.float32)
    q = tvm_fxp.quantize(model_path("fmnist_vgg"), x, progress=False)
    f_acc = q.plan["input"].frac + q.plan["conv2d_0.weight"].frac
    bad = q.plan.with_format("conv2d_0.bias", tvm_fxp.FixedPointFormat(16, f_acc + 1))
    with pytest.raises(tvm_fxp.PlanError, match=r"conv2d_0.bias: frac .* exceeds the accumulator"):
        tvm_fxp.bind_plan(q.prepared, q.graph, bad)


def test_accumulator_beyond_float64_exactness_is_refused():
    x = np.random.default_rng(0).random((4, 1, 28, 28), dtype=np.float32)
    q = tvm_fxp.quantize(model_path("fmnist_vgg"), x, progress=False)
    plan = q.plan.with_format("conv2d_1.weight", tvm_fxp.FixedPointFormat(32, 31))
    plan = plan.with_format("conv2d_0.output", tvm_fxp.FixedPointFormat(32, 20, False))
    with pytest.raises(ValueError, match=r"layer conv2d_1: accumulator needs \d+ bits \(> 52\)"):
        tvm_fxp.bind_plan(q.prepared, q.graph, plan)


def test_cli_reports_errors_with_exit_code_2(tmp_path, capsys):
    bad = tmp_path / "plan.json"
    bad.write_text(json.dumps({"format_version": 1, "tensors": {"input": {"bits": 99, "frac": 0}}}))
    code = main(["quantize", str(model_path("fmnist_vgg")), "--calib", "synthetic", "--calib-size", "4",
                 "--plan", str(bad), "--out", str(tmp_path / "o"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "plan file" in err and "bits must be in" in err
    code = main(["quantize", str(tmp_path / "missing.onnx"), "--calib", "synthetic", "--out", str(tmp_path / "o")])
    assert code == 2 and "does not exist" in capsys.readouterr().err
    code = main(["quantize", str(model_path("fmnist_vgg")), "--calib", "nonsense", "--out", str(tmp_path / "o")])
    assert code == 2 and "no such file or folder; expected 'fashion-mnist', 'synthetic'" in capsys.readouterr().err
