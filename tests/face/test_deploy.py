"""Building for a target: presets and target dicts, ``quantize --target``, ``tvm-fxp compile``, ``build.json``,
the cross-compiled Raspberry Pi 4 library and the error when its toolchain is missing."""

import json
import os
import shutil

import numpy as np
import pytest
import tvm

from conftest import model_path
from tvm_fxp import api, cli, deploy
from tvm_fxp.remote import elf_arch


def needs_cross_compiler(arch="aarch64"):
    """A cross compiler: required in CI (``.ci/setup_arm.sh`` installs it), else the test skips."""
    if shutil.which(deploy.CROSS_TOOLCHAINS[arch][0]) is None:
        msg = f"{deploy.CROSS_TOOLCHAINS[arch][0]} missing: run bash .ci/setup_arm.sh (as root)"
        if os.environ.get("CI") == "true":
            pytest.fail(msg)
        pytest.skip(msg)


@pytest.fixture(scope="module")
def quantized_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("deploy") / "vgg"
    assert cli.main(["quantize", str(model_path("fmnist_vgg")), "--calib", "fashion-mnist", "--calib-size", "64",
                     "--eval-size", "64", "--accumulator", "narrow", "--quiet", "--out", str(out)]) == 0
    return out


def test_resolve_target_presets_and_dicts(tmp_path):
    t, name = deploy.resolve_target("rpi4")
    assert name == "rpi4" and deploy.target_arch(t) == "aarch64" and str(t.attrs["mcpu"]) == "cortex-a72"
    assert not deploy.runs_on_host(t)
    t, name = deploy.resolve_target("host")
    assert name == "host" and deploy.runs_on_host(t)
    spec = {"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mcpu": "cortex-a53", "mattr": ["+neon"]}
    t, name = deploy.resolve_target(json.dumps(spec))
    assert name == "custom" and deploy.target_json(t) == spec
    f = tmp_path / "board.json"
    f.write_text(json.dumps(spec))
    assert deploy.target_json(deploy.resolve_target(str(f))[0]) == spec
    with pytest.raises(deploy.DeployError, match="unknown target 'rpi9'.*host, rpi4"):
        deploy.resolve_target("rpi9")
    with pytest.raises(deploy.DeployError, match="not valid JSON"):
        deploy.resolve_target('{"kind": llvm}')
    with pytest.raises(deploy.DeployError, match="needs at least a 'kind'"):
        deploy.resolve_target('{"mcpu": "cortex-a72"}')


def test_quantize_writes_build_info(quantized_dir):
    info = json.loads((quantized_dir / "build.json").read_text())
    summary = json.loads((quantized_dir / "summary.json").read_text())
    assert info["preset"] == "host" and info["arch"] == "x86_64" and info["runs_on_host"]
    assert info["accumulators"] == summary["accumulators"]
    assert list(info["kernels"]) == list(summary["accumulators"])    # every weighted layer, in order
    for layer, calls in info["kernels"].items():
        assert len(calls) == 1 and calls[0]["kernel"] == "tvm_fxp", layer
        assert calls[0]["accumulator"] == summary["accumulators"][layer]
    assert info["tuning_db"] is None
    assert summary["bit_exact"] is True


def test_compile_rpi4_cross_compiles_aarch64(quantized_dir, tmp_path):
    needs_cross_compiler()
    out = tmp_path / "pi"
    assert cli.main(["compile", str(quantized_dir), "--target", "rpi4", "--out", str(out)]) == 0
    info = json.loads((out / "build.json").read_text())
    assert info["preset"] == "rpi4" and info["arch"] == "aarch64" and not info["runs_on_host"]
    assert info["target"]["mtriple"] == "aarch64-linux-gnu" and info["target"]["mcpu"] == "cortex-a72"
    assert elf_arch(out / "model.so") == "aarch64"
    assert info["accumulator_policy"] == "narrow"
    # the same plan's kernels, with the NEON lane count (16 int8 weights per q register); int32 layers whose
    # weights prove the int16 pair sums: the paired gemmlowp/ruy kernel, register block (positions, channels)
    calls = [c for calls in info["kernels"].values() for c in calls]
    assert {c["lanes"] for c in calls if c["op"] == "conv2d" and c["layout"] != "paired"} <= {8, 16}
    assert all(c["accumulator"] == "int32" and len(c["register_block"]) == 2 for c in calls
               if c["layout"] == "paired")
    assert (out / "plan.json").read_text() == (quantized_dir / "plan.json").read_text()


def test_compile_rpi3_cross_compiles_armv7(quantized_dir, tmp_path):
    """The 32-bit preset links with the hard-float toolchain (no armv7 board is emulated here: build only)."""
    needs_cross_compiler("arm")
    out = tmp_path / "pi3"
    assert cli.main(["compile", str(quantized_dir), "--target", "rpi3", "--out", str(out)]) == 0
    info = json.loads((out / "build.json").read_text())
    assert info["preset"] == "rpi3" and info["arch"] == "arm" and info["target"]["mcpu"] == "cortex-a53"
    head = (out / "model.so").read_bytes()[:20]
    assert elf_arch(out / "model.so") == "arm" and head[4] == 1          # ELF32 ARM
    assert all(c["kernel"] == "tvm_fxp" for calls in info["kernels"].values() for c in calls)


def test_compile_target_dict_host_matches_quantize(quantized_dir, tmp_path):
    out = tmp_path / "dict"
    spec = json.dumps({"kind": "llvm", "mcpu": tvm.target.codegen.llvm_get_system_cpu()})
    assert cli.main(["compile", str(quantized_dir), "--target", spec, "--out", str(out)]) == 0
    assert json.loads((out / "build.json").read_text())["preset"] == "custom"
    from tvm_fxp.datasets import fashion_mnist

    x = fashion_mnist("test", limit=32).inputs
    a = api.Runner(quantized_dir / "model.so").run(x)
    b = api.Runner(out / "model.so").run(x)
    np.testing.assert_array_equal(a, b)


def test_missing_cross_toolchain_names_the_package(quantized_dir, tmp_path, monkeypatch, capsys):
    real_which = shutil.which
    monkeypatch.setattr(shutil, "which", lambda name, *a, **k: None if "aarch64" in name else real_which(name, *a, **k))
    assert cli.main(["compile", str(quantized_dir), "--target", "rpi4", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "aarch64-linux-gnu-g++ is not installed" in err and "apt-get install g++-aarch64-linux-gnu" in err
    assert "Traceback" not in err
    assert not (tmp_path / "x" / "model.so").exists()


def test_compile_errors_are_clear(tmp_path, capsys):
    assert cli.main(["compile", str(tmp_path), "--target", "rpi4", "--out", str(tmp_path / "o")]) == 2
    assert "plan.json is missing" in capsys.readouterr().err


@pytest.mark.slow   # ~25 s: calibrates, measures on the host and cross-compiles
def test_ternary_4bit_quantize_for_rpi4_says_which_layers_run_bitserial(tmp_path):
    """``--method mellempudi2017 --act-bits 4 --target rpi4``: build.json, summary.json and report.md name the
    ternary layers that got the multiply-free bit-serial kernel and why (4-bit data proven by the producer's
    saturate, estimated cycles vs the paired int32 kernel)."""
    needs_cross_compiler()
    out = tmp_path / "ternary4"
    assert cli.main(["quantize", str(model_path("fmnist_vgg")), "--calib", "fashion-mnist", "--calib-size", "32",
                     "--eval-size", "32", "--method", "mellempudi2017", "--act-bits", "4", "--target", "rpi4",
                     "--quiet", "--out", str(out)]) == 0
    info = json.loads((out / "build.json").read_text())
    summary = json.loads((out / "summary.json").read_text())
    assert summary["kernels"] == info["kernels"] and summary["bit_exact"] and summary["config"]["act_bits"] == 4
    layouts = {layer: calls[0]["layout"] for layer, calls in info["kernels"].items()}
    assert layouts == {"conv2d_0": "channels", "conv2d_1": "bitserial", "conv2d_2": "bitserial",
                       "conv2d_3": "bitserial", "matmul_0": "bitserial", "matmul_1": "paired"}
    why = info["kernels"]["conv2d_3"][0]["why"]
    assert why.startswith("ternary weights, data <= 15 (4-bit planes") and why.endswith("bit-serial"), why
    assert "why" not in info["kernels"]["matmul_1"][0]          # 8-bit weights: not a candidate
    report = (out / "report.md").read_text()
    assert "## Kernels (rpi4)" in report
    assert "| conv2d_3 | bitserial (4-bit data, positions in lanes) | int32 |" in report
