"""aarch64 code run under qemu-user, bit-exact against numpy (kernels) and the host simulation (models).

Everything is cross-compiled here for the Raspberry Pi 4 preset, exported with aarch64-linux-gnu-g++ and run
by ONE emulated Python process (start-up ~5 s), see arm_runner.py.  Needs ``bash .ci/setup_arm.sh``; skipped
with the reason otherwise, and FAILED when ``CI=true`` (``arm_tools.require``).
"""

import json

import numpy as np
import pytest
import tvm

from tvm_fxp.schedules import arm_emulation, conv2d_primfuncs, dense_primfuncs, host, plan_conv2d, plan_dense, \
    preset

from . import arm_tools
from . import reference as ref

RPI4 = preset("rpi4")
HOST = host()


@pytest.fixture(autouse=True)
def _needs_emulation():
    arm_tools.require(arm_tools.EMULATOR_MISSING)

# name -> (kind, data shape, weight shape, dtype, acc, conv attrs)
CONVS = {
    "conv3x3_int8_int16": ((1, 16, 14, 14), (32, 16, 3, 3), "int8", "int16", dict(padding=(1, 1, 1, 1))),
    "conv3x3_s2_uint8_int16": ((2, 8, 11, 9), (24, 8, 3, 3), "uint8", "int16",
                               dict(strides=(2, 2), padding=(1, 0, 2, 1))),
    "conv3x3_d2_int8_int32": ((1, 8, 12, 10), (16, 8, 3, 3), "int8", "int32", dict(dilation=(2, 2))),
    "conv3x3_uint8_int32": ((1, 16, 9, 9), (16, 16, 3, 3), "uint8", "int32", dict(padding=(1, 1, 1, 1))),
    "depthwise3x3_uint8_int16": ((1, 24, 10, 10), (24, 1, 3, 3), "uint8", "int16",
                                 dict(groups=24, padding=(1, 1, 1, 1))),
    "grouped5x5_int8_int16": ((1, 12, 9, 9), (20, 3, 5, 5), "int8", "int16", dict(groups=4, padding=(2, 2, 2, 2))),
    "conv1x1_uint8_int16": ((1, 32, 7, 7), (40, 32, 1, 1), "uint8", "int16", {}),
}
DENSES = {
    "dense_uint8_int16": ((3, 300), (300, 70), "uint8", "int16"),
    "dense_int8_int16": ((1, 1568), (1568, 128), "int8", "int16"),
    "dense_int8_int32": ((2, 200), (200, 33), "int8", "int32"),
    "dense_uint8_int32": ((1, 128), (128, 10), "uint8", "int32"),
}
N_IMAGES = 24


def _export(lib, path):
    lib.export_library(str(path), fcompile=arm_emulation.cross_compiler())


def _kernel_case(work, name, plan, funcs, x, w, expected):
    """Pack on the host, cross-compile the kernel, and describe the call for arm_runner.py."""
    pack_func, offset_func, kernel_func = funcs
    n_out = plan.out_channels if hasattr(plan, "out_channels") else plan.outputs
    packed = tvm.runtime.empty(plan.packed_weight_shape, "int8")
    tvm.tirx.build(pack_func, target=HOST)(tvm.runtime.tensor(w), packed)
    inputs = {"data": x, "packed": packed.numpy()}
    if offset_func is not None:
        offset = tvm.runtime.empty((n_out,), plan.acc_dtype)
        tvm.tirx.build(offset_func, target=HOST)(tvm.runtime.tensor(w), offset)
        inputs["offset"] = offset.numpy()
    np.savez(work / f"{name}.npz", **inputs)
    _export(tvm.tirx.build(kernel_func.with_attr("global_symbol", "kernel"), target=RPI4), work / f"{name}.so")
    return {"name": name, "lib": f"{name}.so", "inputs": f"{name}.npz", "args": list(inputs), "entry": "kernel",
            "out_shape": list(expected.shape), "out_dtype": plan.acc_dtype}


@pytest.fixture(scope="module")
def emulated(tmp_path_factory):
    """Build everything, run it all in one qemu process, return (expected, results)."""
    from tvm_fxp.datasets import fashion_mnist

    work = tmp_path_factory.mktemp("arm")
    rng = np.random.default_rng(2024)
    manifest = {"kernels": [], "models": []}
    expected = {}
    for name, (xs, ws, dtype, acc, attrs) in CONVS.items():
        x, w = ref.random_operands(rng, xs, ws, dtype, acc, int(np.prod(ws[1:])))
        attrs = {"strides": (1, 1), "padding": (0, 0, 0, 0), "dilation": (1, 1), "groups": 1, **attrs}
        plan = plan_conv2d(xs, ws, dtype, acc, attrs["strides"], attrs["padding"], attrs["dilation"],
                           attrs["groups"], target=RPI4)
        expected[name] = ref.conv2d_ref(x, w, attrs["strides"], attrs["padding"], attrs["dilation"], attrs["groups"])
        manifest["kernels"].append(_kernel_case(work, name, plan, conv2d_primfuncs(plan), x, w, expected[name]))
    for name, (as_, bs, dtype, acc) in DENSES.items():
        a, b = ref.random_operands(rng, as_, bs, dtype, acc, bs[0])
        plan = plan_dense(as_, bs, dtype, acc, target=RPI4)
        expected[name] = ref.dense_ref(a, b)
        manifest["kernels"].append(_kernel_case(work, name, plan, dense_primfuncs(plan), a, b, expected[name]))

    images = fashion_mnist("test", limit=N_IMAGES).inputs
    np.savez(work / "images.npz", x=images)
    for bits in (4, 8):
        q = ref.quantized_vgg(bits)
        expected[f"vgg_{bits}bit"] = ref.run_host(q.simulated(), images)
        _export(tvm.compile(q.realized(accumulator="narrow"), target=RPI4), work / f"vgg_{bits}bit.so")
        manifest["models"].append({"name": f"vgg_{bits}bit", "lib": f"vgg_{bits}bit.so", "inputs": "images.npz"})
    # both reference models through tvm_fxp.build's pipeline (fused requantize epilogues) for the Pi
    import tvm_fxp

    for model in ("fmnist_vgg", "fmnist_resnet"):
        q = ref.quantized_vgg(4, model)
        expected[f"{model}_fused"] = ref.run_host(q.simulated(), images)
        _export(tvm_fxp.build(q.realized(accumulator="narrow"), RPI4), work / f"{model}_fused.so")
        manifest["models"].append({"name": f"{model}_fused", "lib": f"{model}_fused.so", "inputs": "images.npz"})

    (work / "manifest.json").write_text(json.dumps(manifest))
    arm_tools.require_emulator().run_python(ref.HERE / "arm_runner.py", str(work))
    with np.load(work / "results.npz") as res:
        results = {k: res[k] for k in res.files}
    assert str(results["machine"]) == "aarch64"
    return expected, results


@pytest.mark.parametrize("name", sorted(CONVS) + sorted(DENSES))
def test_kernel_bit_exact_under_qemu(emulated, name):
    expected, results = emulated
    got = results[name]
    assert got.dtype == np.dtype(name.rsplit("_", 1)[1])
    np.testing.assert_array_equal(got.astype(np.int64), expected[name])


@pytest.mark.parametrize("bits", [4, 8])
def test_realized_vgg_under_qemu_equals_host_simulation(emulated, bits):
    """The whole realized model (int16 accumulators at 4 bits, int32 at 8), cross-compiled through the
    kernels and run on emulated aarch64, gives exactly the host's float64 simulation."""
    expected, results = emulated
    np.testing.assert_array_equal(results[f"vgg_{bits}bit"], expected[f"vgg_{bits}bit"])


@pytest.mark.parametrize("model", ["fmnist_vgg", "fmnist_resnet"])
def test_reference_models_fused_for_the_pi_under_qemu(emulated, model):
    """Both reference models (int16 accumulators), built for the Pi by ``tvm_fxp.build`` (epilogues fused into
    the kernels), run on emulated aarch64 and give exactly the host's float64 simulation."""
    expected, results = emulated
    np.testing.assert_array_equal(results[f"{model}_fused"], expected[f"{model}_fused"])
