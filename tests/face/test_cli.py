import json

import numpy as np
import pytest

from tvm_fxp.cli import SUMMARY_KEYS, main
from conftest import model_path


def _run(argv, capsys):
    code = main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_quantize_fashion_mnist_writes_everything(tmp_path, capsys):
    out = tmp_path / "vgg8"
    code, stdout, err = _run(["quantize", str(model_path("fmnist_vgg")), "--calib", "fashion-mnist", "--method",
                              "uniform", "--bits", "8", "--out", str(out), "--calib-size", "200",
                              "--eval-size", "500", "--quiet"], capsys)
    assert code == 0, err
    for f in ("plan.json", "model.so", "report.md", "summary.json"):
        assert (out / f).stat().st_size > 0
    s = json.loads((out / "summary.json").read_text())
    assert set(SUMMARY_KEYS) <= set(s)
    assert s["method"] == "uniform" and s["bit_exact"] is True and s["float_ops_in_integer_graph"] == 0
    assert 0.85 < s["fxp_top1"] <= 1 and 0.85 < s["float_top1"] <= 1 and s["agreement"] > 0.95
    assert s["mult_cost_vs_8bit"] == pytest.approx(1.0)
    assert s["memory_reduction_vs_float"] == pytest.approx(4.0)
    assert 16 <= s["max_accumulator_bits"] <= 31
    assert "fashion-mnist test split" in s["data_source"]
    # weight_bits counts every weight and bias at 8 bits
    plan = json.loads((out / "plan.json").read_text())
    n_params = sum(l["params"] for l in plan["layers"].values())
    assert s["weight_bits"] == 8 * n_params
    assert "| conv2d_0 | conv2d+relu |" in (out / "report.md").read_text()

    # evaluate re-measures from the directory
    code, stdout, err = _run(["evaluate", str(out), "--data", "fashion-mnist", "--eval-size", "300", "--quiet"], capsys)
    assert code == 0, err
    ev = json.loads((out / "evaluation.json").read_text())
    assert ev["bit_exact"] is True and ev["evaluated_inputs"] == 300


def test_hand_edited_plan_pins_a_layer_to_16_bits(tmp_path, capsys):
    out = tmp_path / "a"
    args = ["--calib", "synthetic", "--calib-size", "16", "--eval-size", "16", "--quiet"]
    assert _run(["quantize", str(model_path("fmnist_vgg")), "--out", str(out)] + args, capsys)[0] == 0
    plan = json.loads((out / "plan.json").read_text())
    plan["tensors"]["conv2d_1.weight"] = {"bits": 16, "frac": 15, "signed": True}
    plan["tensors"]["conv2d_1.bias"]["bits"] = 16
    (tmp_path / "edited.json").write_text(json.dumps(plan))
    out2 = tmp_path / "b"
    code, _, err = _run(["quantize", str(model_path("fmnist_vgg")), "--plan", str(tmp_path / "edited.json"),
                         "--out", str(out2)] + args, capsys)
    assert code == 0, err
    s = json.loads((out2 / "summary.json").read_text())
    assert s["bit_exact"] is True
    assert s["mult_cost_vs_8bit"] > 1.0     # one layer now multiplies 8 x 16 bits
    assert json.loads((out2 / "plan.json").read_text())["tensors"]["conv2d_1.weight"]["bits"] == 16


def test_synthetic_and_npz_data(tmp_path, capsys, rng):
    code, stdout, err = _run(["quantize", str(model_path("fmnist_vgg")), "--calib", "synthetic", "--out",
                              str(tmp_path / "s"), "--calib-size", "16", "--eval-size", "16", "--quiet"], capsys)
    assert code == 0, err
    s = json.loads((tmp_path / "s" / "summary.json").read_text())
    assert s["float_top1"] is None and s["fxp_top1"] is None and s["bit_exact"] is True
    x = rng.random((20, 1, 28, 28), dtype=np.float32)
    np.savez(tmp_path / "d.npz", inputs=x, labels=np.arange(20) % 10)
    code, stdout, err = _run(["quantize", str(model_path("fmnist_vgg")), "--calib", str(tmp_path / "d.npz"),
                              "--out", str(tmp_path / "n"), "--bits", "6", "--quiet"], capsys)
    assert code == 0, err
    s = json.loads((tmp_path / "n" / "summary.json").read_text())
    assert 0 <= s["fxp_top1"] <= 1 and s["evaluated_inputs"] == 20
    assert s["mult_cost_vs_8bit"] == pytest.approx(36 / 64)


def test_allow_float_islands_flag(tmp_path, capsys):
    """A square root (no table form: not finite for negative inputs) between two convs: refused with a
    message naming the node and the flag; with --allow-float-islands quantized bit-exact, and summary.json /
    report.md list the island.  (Sigmoid, tanh, SiLU... are integer lookup tables and need no island.)"""
    from onnx_graphs import Net, save

    g = Net([1, 2, 6, 6])
    a, b = (g.op("Relu", [g.conv("input", 2, 2)]) for _ in range(2))
    x = g.conv(g.op("Sqrt", [g.op("Concat", [a, b], axis=1)]), 4, 3)
    path = save(g.model(g.op("GlobalAveragePool", [x])), tmp_path)
    args = ["quantize", str(path), "--calib", "synthetic", "--calib-size", "16", "--eval-size", "16", "--quiet"]
    code, _, err = _run(args + ["--out", str(tmp_path / "no")], capsys)
    assert code != 0 and "relax.sqrt has no integer realization" in err and "--allow-float-islands" in err
    code, _, err = _run(args + ["--out", str(tmp_path / "yes"), "--allow-float-islands"], capsys)
    assert code == 0, err
    s = json.loads((tmp_path / "yes" / "summary.json").read_text())
    assert s["float_islands"] == [{"layer": "float_0", "op": "relax.sqrt"}] and s["bit_exact"] is True
    assert "| float_0 | relax.sqrt |" in (tmp_path / "yes" / "report.md").read_text()
    code, _, err = _run(["report", str(tmp_path / "yes"), "--quiet"], capsys)
    assert code == 0, err
    assert "float_0 (relax.sqrt)" in (tmp_path / "yes" / "report.html").read_text()
    # time per layer: every conv kernel call attributed to its layer, with its MACs (6x6 outputs, 3x3 kernels)
    timing = json.loads((tmp_path / "yes" / "report_timing.json").read_text())
    convs = {r["layer"]: r for r in timing if r["layer"] != "-"}
    assert sorted(convs) == ["conv2d_0", "conv2d_1", "conv2d_2"], convs
    assert convs["conv2d_2"]["macs"] == 36 * 3 * 4 * 9 and all(r["ms"] > 0 for r in convs.values())
    assert "Time per layer" in (tmp_path / "yes" / "report.html").read_text()


def test_narrow_policy_reports_each_layers_accumulator(tmp_path, capsys):
    """--accumulator narrow: summary.json and report.md say per layer whether it sums in int16, in int16
    k-tiles widened into int32, or in int32 (6-bit vgg has all three)."""
    code, _, err = _run(["quantize", str(model_path("fmnist_vgg")), "--calib", "synthetic", "--bits", "6",
                         "--accumulator", "narrow", "--calib-size", "16", "--eval-size", "16", "--quiet",
                         "--out", str(tmp_path / "n")], capsys)
    assert code == 0, err
    s = json.loads((tmp_path / "n" / "summary.json").read_text())
    kinds = set(s["accumulators"].values())
    assert "int16" in kinds and any("k-tiles" in k for k in kinds), kinds
    assert s["bit_exact"] is True
    report = (tmp_path / "n" / "report.md").read_text()
    assert "Accumulator policy `narrow`" in report
    assert all(f"| {how} |" in report for how in kinds)


def test_proven_accumulators_are_the_default(tmp_path, capsys):
    """No --accumulator: every layer whose bound proves 16 bits gets int16, the others int32 (k-tiled proofs
    included: the tiles would be separate kernel calls), each with its reason; --accumulator wide opts out."""
    args = ["quantize", str(model_path("fmnist_vgg")), "--calib", "synthetic", "--bits", "6", "--calib-size", "16",
            "--eval-size", "16", "--quiet"]
    code, _, err = _run(args + ["--out", str(tmp_path / "p")], capsys)
    assert code == 0, err
    s = json.loads((tmp_path / "p" / "summary.json").read_text())
    assert s["accumulator_policy"] == "proven" and s["bit_exact"] is True
    kinds, why = s["accumulators"], s["accumulator_reasons"]
    assert set(kinds.values()) == {"int16", "int32"} and set(why) == set(kinds), (kinds, why)
    for layer, how in kinds.items():
        bound = int(why[layer].split("<= ")[1].split(" ")[0])
        assert (how == "int16") == (bound < 2 ** 15), (layer, how, why[layer])
    assert "| why |" in (tmp_path / "p" / "report.md").read_text()
    code, _, err = _run(args + ["--accumulator", "wide", "--out", str(tmp_path / "w")], capsys)
    assert code == 0, err
    w = json.loads((tmp_path / "w" / "summary.json").read_text())
    assert set(w["accumulators"].values()) == {"int32"}
    assert all("--accumulator wide" in r for r in w["accumulator_reasons"].values())


def test_dynamic_input_needs_input_shape_on_the_cli(tmp_path, capsys):
    """A model exported with dynamic spatial dims: refused naming the input and the flag; quantized with
    --input-shape."""
    from onnx_graphs import Net, save

    g = Net([1, 3, 8, 8])
    x = g.op("GlobalAveragePool", [g.op("Relu", [g.conv("input", 3, 4)])])
    path = save(g.model(x, dims=["N", 3, "H", "W"]), tmp_path, "dyn.onnx")
    args = ["quantize", str(path), "--calib", "synthetic", "--calib-size", "8", "--eval-size", "8", "--quiet"]
    code, _, err = _run(args + ["--out", str(tmp_path / "a")], capsys)
    assert code == 2 and "input 'input'" in err and "dynamic dimensions" in err and "--input-shape" in err
    code, _, err = _run(args + ["--out", str(tmp_path / "b"), "--input-shape", "1,3,12,10"], capsys)
    assert code == 0, err
    s = json.loads((tmp_path / "b" / "summary.json").read_text())
    assert s["input_shape"] == [1, 3, 12, 10] and s["bit_exact"] is True


@pytest.mark.slow   # the correction itself: tests/methods (test_bias_correction_recovers_uniform_4bit_...)
def test_bias_correction_flag_recovers_a_4bit_plan(tmp_path, capsys):
    """``--bias-correction on`` after any method (here uniform 4-bit): label-free, written into plan.json,
    realized bit-exact, and the measured top-1 is well above the uncorrected plan's."""
    common = ["--calib", "fashion-mnist", "--method", "uniform", "--bits", "4", "--calib-size", "200",
              "--search-size", "256", "--eval-size", "500", "--quiet"]
    tops = {}
    for mode in ("off", "on"):
        out = tmp_path / mode
        code, _, err = _run(["quantize", str(model_path("fmnist_vgg")), "--out", str(out), "--bias-correction",
                             mode] + common, capsys)
        assert code == 0, err
        s = json.loads((out / "summary.json").read_text())
        plan = json.loads((out / "plan.json").read_text())
        assert s["bit_exact"] is True
        assert bool(plan.get("bias_correction")) == (mode == "on")
        tops[mode] = s["fxp_top1"]
    assert "bias correction (applied)" in err
    assert tops["on"] > tops["off"] + 0.15, tops


@pytest.mark.slow   # k-tiles stay covered by tests/passes/test_realize.py and tests/schedules/test_ktiles.py
def test_debruin_max_tiles_flag(tmp_path, capsys, monkeypatch):
    """``--max-tiles 0`` keeps de Bruin to whole reductions: every layer's proof fits 16 bits outright.  The
    search scores plans on the validation split and never reads the test split (every split request is
    recorded with whether a search was running); the summary reports the search's own estimate."""
    from tvm_fxp import datasets

    reads, check = [], datasets.TestSplitGuard.check.__func__

    def spy(cls, split):
        reads.append((split, bool(cls._active)))
        check(cls, split)

    monkeypatch.setattr(datasets.TestSplitGuard, "check", classmethod(spy))
    out = tmp_path / "db"
    code, _, err = _run(["quantize", str(model_path("fmnist_vgg")), "--out", str(out), "--calib", "fashion-mnist",
                         "--method", "debruin2020", "--max-tiles", "0", "--calib-size",
                         "200", "--search-size", "128", "--eval-size", "200", "--quiet"], capsys)
    assert code == 0, err
    assert ("val", True) in reads and ("test", True) not in reads and ("test", False) in reads, reads
    s = json.loads((out / "summary.json").read_text())
    search = s["search"]
    assert search["inputs"] == 128 and "val split" in search["data"] and search["stopped_by"] == "its own rule"
    assert search["evaluations"] > 0 and 0.5 < search["estimate"]["fxp_top1"] <= 1
    assert s["accumulator_policy"] == "narrow"   # de Bruin's default: the 16-bit claim realized
    proofs = json.loads((out / "plan.json").read_text())["proofs"]
    assert proofs and all("tiles" not in p and p["bound"] < 1 << 15 for p in proofs.values())
    assert json.loads((out / "summary.json").read_text())["bit_exact"] is True


def test_check_split_is_the_validation_images_after_the_search():
    """goyal2021's and fxpqnet's check split: the ``--search-size`` validation images after the search's own,
    none of them a search image; a source without a validation split has none."""
    from tvm_fxp.cli import build_parser, check_data
    from tvm_fxp.datasets import fashion_mnist

    args = build_parser().parse_args(["quantize", "m.onnx", "--calib", "fashion-mnist", "--out", "o",
                                      "--search-size", "300"])
    c, val = check_data("fashion-mnist", args), fashion_mnist("val", limit=600)
    assert np.array_equal(c.inputs, val.inputs[300:600]) and np.array_equal(c.labels, val.labels[300:600])
    assert "images 300-599" in c.source and "val split" in c.source
    assert check_data("synthetic", args) is None
