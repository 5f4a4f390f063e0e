"""Quantize for a Raspberry Pi 4, cross-compile, and run it on the board over TVM RPC.

    # on the Pi (TVM runtime only, see the README's "Deploy to a Raspberry Pi"):
    #   python3 -m tvm.exec.rpc_server --host 0.0.0.0 --port 9090
    .venv/bin/python examples/rpi4_deploy.py --rpc 192.168.1.20:9090
    .venv/bin/python examples/rpi4_deploy.py --emulate     # no Pi: an emulated one on 127.0.0.1 (qemu-user)

The same three steps as the CLI:

    tvm-fxp quantize examples/models/fmnist_vgg.onnx --calib fashion-mnist --accumulator narrow --target rpi4 --out build/pi
    tvm-fxp run build/pi --rpc 192.168.1.20:9090 --data fashion-mnist

``--emulate`` needs ``bash .ci/setup_arm.sh`` (qemu-user, an aarch64 Python with the TVM runtime); qemu
timings mean nothing, the results are what is checked.
"""

import argparse
import contextlib
import json
import sys
from pathlib import Path

from tvm_fxp import cli

HERE = Path(__file__).resolve().parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=str(HERE / "models" / "fmnist_vgg.onnx"))
    ap.add_argument("--out", default="build/rpi4")
    ap.add_argument("--eval-size", type=int, default=500)
    where = ap.add_mutually_exclusive_group(required=True)
    where.add_argument("--rpc", help="HOST:PORT of the Pi's TVM RPC server")
    where.add_argument("--emulate", action="store_true", help="start an emulated Pi on 127.0.0.1")
    args = ap.parse_args()

    # 1. calibrate, choose formats, realize, cross-compile for the Pi (model.so + build.json)
    assert cli.main(["quantize", args.model, "--calib", "fashion-mnist", "--calib-size", "256",
                     "--eval-size", str(args.eval_size), "--accumulator", "narrow", "--target", "rpi4",
                     "--out", args.out, "--quiet"]) == 0
    build = json.loads((Path(args.out) / "build.json").read_text())
    print(f"built {build['library']} for {build['preset']} ({build['arch']}): "
          f"{sum(len(v) for v in build['kernels'].values())} integer kernels, accumulators {build['accumulators']}")

    # 2. run it on the board: top-1, agreement and bit-exactness against the host simulation, latency
    board = contextlib.nullcontext()
    if args.emulate:   # the emulated board is test tooling of the repository (tools/), not of the package
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
        from tools.emulation import EmulatedBoard

        board = EmulatedBoard()
    with board as b:
        address = b.address if args.emulate else args.rpc
        assert cli.main(["run", args.out, "--rpc", address, "--data", "fashion-mnist",
                         "--eval-size", str(args.eval_size)]) == 0


if __name__ == "__main__":
    main()
