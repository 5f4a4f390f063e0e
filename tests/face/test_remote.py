"""``tvm-fxp run --rpc``: a cross-compiled Raspberry Pi 4 library run over TVM RPC on an emulated board
(a TVM RPC server under qemu-aarch64 on 127.0.0.1, only the TVM runtime installed), bit for bit against the
x86 simulation; and the errors for an unreachable server, a library for another architecture and a
library that is not what build.json records.

One emulated board for the module (start-up ~10 s), always stopped by the fixture."""

import json
import shutil

import pytest

from conftest import model_path
from deploy_helpers import require_emulation
from tvm_fxp import cli
from tools.emulation import EmulatedBoard, free_port


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """(board, host dir, rpi4 dir): the board boots under qemu while the model is quantized and compiled."""
    require_emulation()
    b = EmulatedBoard(wait=False)
    try:
        root = tmp_path_factory.mktemp("remote")
        host, pi = root / "host", root / "pi"
        assert cli.main(["quantize", str(model_path("fmnist_vgg")), "--calib", "fashion-mnist", "--calib-size", "64",
                         "--eval-size", "32", "--accumulator", "narrow", "--quiet", "--out", str(host)]) == 0
        assert cli.main(["compile", str(host), "--target", "rpi4", "--out", str(pi)]) == 0
        yield b.wait(), host, pi
    finally:
        b.close()
    assert b.proc is None


@pytest.fixture(scope="module")
def board(setup):
    return setup[0]


@pytest.fixture(scope="module")
def dirs(setup):
    return setup[1:]


def test_rpi4_library_over_rpc_is_bit_exact(board, dirs, capsys):
    emulator = require_emulation()
    # the board has the TVM runtime only: no compiler library, no tvm-fxp
    assert (emulator.site / "tvm" / "lib" / "libtvm_runtime.so").exists()
    assert not (emulator.site / "tvm" / "lib" / "libtvm_compiler.so").exists()
    assert not (emulator.site / "tvm_fxp").exists()
    _, pi = dirs
    assert cli.main(["run", str(pi), "--rpc", board.address, "--data", "fashion-mnist", "--eval-size", "64",
                     "--repeat", "3", "--quiet"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["arch"] == "aarch64" and out["target"] == "rpi4"
    assert out["bit_exact"] is True and out["agreement_with_simulation"] == 1.0
    assert out["evaluated_inputs"] == 64 and 0.75 <= out["fxp_top1"] <= 1.0
    assert out["latency_ms"] > 0
    assert json.loads((pi / "run.json").read_text())["bit_exact"] is True
    assert board.sessions >= 1


def test_unreachable_server(dirs, capsys):
    _, pi = dirs
    port = free_port()
    assert cli.main(["run", str(pi), "--rpc", f"127.0.0.1:{port}", "--data", "synthetic", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert f"cannot reach the RPC server at 127.0.0.1:{port}" in err and "tvm.exec.rpc_server" in err
    assert cli.main(["run", str(pi), "--rpc", "nonsense", "--data", "synthetic", "--quiet"]) == 2
    assert "expected HOST:PORT" in capsys.readouterr().err


def test_host_library_on_the_aarch64_board(board, dirs, capsys):
    host, _ = dirs
    assert cli.main(["run", str(host), "--rpc", board.address, "--data", "synthetic", "--eval-size", "4",
                     "--quiet"]) == 2
    err = capsys.readouterr().err      # asked before the upload: the board's server executable is aarch64
    assert f"the board at {board.address} is aarch64, but the library is built for x86_64 (host)" in err
    assert "--target rpi4" in err and "Traceback" not in err


def test_board_arch_and_load_error_hint(board, dirs):
    """``board_arch`` reads the board's own executable; when a board does not say, the load error still names
    the library's architecture."""
    from tvm_fxp import remote

    host, _ = dirs
    session = remote.connect(board.address)
    assert remote.board_arch(session) == "aarch64"
    with pytest.raises(remote.RemoteError, match="the board could not load model.so.*built for x86_64"):
        remote.load_remote(session, host / "model.so", remote.check_library(host))


def test_library_that_is_not_what_build_json_records(dirs, tmp_path, capsys):
    host, pi = dirs
    mixed = tmp_path / "mixed"
    shutil.copytree(pi, mixed)
    shutil.copyfile(host / "model.so", mixed / "model.so")     # an x86 library under an rpi4 build.json
    assert cli.main(["run", str(mixed), "--rpc", "127.0.0.1:1", "--data", "synthetic", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "is an x86_64 library but" in err and "records a build for aarch64 (rpi4)" in err


def test_two_inputs_two_outputs_over_rpc(board, tmp_path, capsys):
    """A model with two inputs and two outputs: quantized, compiled for rpi4 and run on the board with
    ``--data synthetic`` (an array per input); each output bit-exact against the x86 simulation."""
    import numpy as np

    from onnx_graphs import Net, multi_io_model, save

    g = Net([1, 2, 6, 6], seed=4)
    s = g.op("Add", [g.conv("img", 2, 4), g.conv("aux", 3, 4, k=1, pad=0)])
    outs = [g.op("Sigmoid", [g.conv(s, 4, 3, k=1, pad=0)]), g.op("Relu", [s])]
    path = save(multi_io_model(g, [("img", ["N", 2, 6, 6]), ("aux", ["N", 3, 6, 6])], outs), tmp_path, "two.onnx")
    npz = tmp_path / "calib.npz"
    rng = np.random.default_rng(0)
    np.savez(npz, img=rng.normal(0, 1, (16, 2, 6, 6)).astype(np.float32),
             aux=rng.normal(0, 1, (16, 3, 6, 6)).astype(np.float32))
    host, pi = tmp_path / "host", tmp_path / "pi"
    assert cli.main(["quantize", str(path), "--calib", str(npz), "--data", "synthetic", "--eval-size", "8",
                     "--out", str(host), "--quiet"]) == 0
    assert cli.main(["compile", str(host), "--target", "rpi4", "--out", str(pi)]) == 0
    capsys.readouterr()
    assert cli.main(["run", str(pi), "--rpc", board.address, "--data", "synthetic", "--eval-size", "10",
                     "--repeat", "2", "--quiet"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["evaluated_inputs"] == 10 and out["fxp_top1"] is None and out["agreement_with_simulation"] is None
    assert out["bit_exact"] is True and len(out["bit_exact_per_output"]) == 2
    assert all(out["bit_exact_per_output"].values()) and out["latency_ms"] > 0
