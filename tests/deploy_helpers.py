"""Shared by the deploy/remote/tune tests: the emulation requirement and a tiny two-kernel model."""

import os

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper


def require_emulation():
    """The emulated aarch64 board (``.ci/setup_arm.sh``): its absence FAILS in CI (CI=true), else skips."""
    from tools import arm_emulation

    emulator, why = arm_emulation.find()
    if emulator is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI needs the emulated aarch64 board: {why}")
        pytest.skip(why)
    return emulator


def tiny_cnn(path, seed: int = 0, convs: int = 1):
    """conv 3x3 (1 -> 16 channels, 12x12) + relu [+ conv 3x3 (16 -> 16) + relu with ``convs=2``] + flatten +
    dense (2304 -> 10): two (three) integer kernels."""
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal((16, 1, 3, 3)) * 0.5).astype(np.float32)
    b = (rng.standard_normal(16) * 0.1).astype(np.float32)
    fw = (rng.standard_normal((10, 16 * 12 * 12)) * 0.02).astype(np.float32)
    fb = np.zeros(10, np.float32)
    inits = [(w, "w"), (b, "b"), (fw, "fw"), (fb, "fb")]
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"])]
    if convs == 2:
        inits += [((rng.standard_normal((16, 16, 3, 3)) * 0.15).astype(np.float32), "w2"),
                  ((rng.standard_normal(16) * 0.1).astype(np.float32), "b2")]
        nodes += [helper.make_node("Conv", ["r", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1]),
                  helper.make_node("Relu", ["c2"], ["r2"])]
    nodes += [helper.make_node("Flatten", [nodes[-1].output[0]], ["f"]),
              helper.make_node("Gemm", ["f", "fw", "fb"], ["y"], transB=1)]
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 12, 12])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])],
                              [numpy_helper.from_array(a, n) for a, n in inits])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path
