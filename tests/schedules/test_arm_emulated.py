"""aarch64 code run under qemu-user, bit-exact against numpy (kernels) and the host simulation (models).

Everything is cross-compiled here for the Raspberry Pi 4 preset, exported with aarch64-linux-gnu-g++ and run
by ONE emulated Python process (start-up ~5 s), see arm_runner.py.  Needs ``bash .ci/setup_arm.sh``; skipped
with the reason otherwise, and FAILED when ``CI=true`` (``arm_tools.require``).
"""

import json

import numpy as np
import pytest
import tvm

from tools import arm_emulation
from tvm_fxp.schedules import conv2d_primfuncs, dense_primfuncs, host, plan_conv2d, plan_dense, preset, register

from tools import kernel_cost
from tvm_fxp.schedules import bitserial
from tvm_fxp.schedules import paired_int32 as paired
from tools.asm import mul_lanes

from . import arm_tools
from . import reference as ref
from .reference import conv2d_ref, dense_ref

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


def paired_cases(seed=7, n=6) -> dict:
    """The paired-int32 baseline on random shapes and formats (seeded: one qemu run checks them all): regular,
    strided, 1x1 and first-layer convs through both depth orders, and dense layers; name -> (x, w, spec)."""
    rng = np.random.default_rng(seed)
    out = {}
    for i in range(n):
        c = int(rng.choice([1, 3, 16, 24, 32]))
        k = int(rng.choice([1, 3])) if c >= 16 else 3
        s, pad = int(rng.integers(1, 3)), (k // 2,) * 4
        hw, oc, dtype = int(rng.integers(5, 12)), int(rng.integers(4, 30)), str(rng.choice(["int8", "uint8"]))
        lo, hi = (-128, 127) if dtype == "int8" else (0, 255)
        x = rng.integers(lo, hi + 1, (1, c, hw, hw)).astype(dtype)
        w = rng.integers(-127, 128, (oc, c, k, k)).astype("int8")
        plan = paired.plan_paired_conv2d(x.shape, w.shape, dtype, strides=(s, s), padding=pad)
        out[f"paired_conv{k}x{k}_c{c}_{plan.depth_order}_{i}"] = (x, w, plan, conv2d_ref(x, w, (s, s), pad))
    for i, (kk, nn, dtype) in enumerate([(300, 37, "uint8"), (64, 10, "int8")]):
        a = rng.integers(-128 if dtype == "int8" else 0, 128 if dtype == "int8" else 256, (1, kk)).astype(dtype)
        b = rng.integers(-127, 128, (kk, nn)).astype("int8")
        out[f"paired_dense_{kk}to{nn}_{i}"] = (a, b, paired.plan_paired_dense(a.shape, b.shape, dtype), dense_ref(a, b))
    return out


PAIRED = paired_cases()


def proof_edge_cases() -> dict:
    """The pair proof at its boundary, on the NEON code: uint8 data whose channels 0 and 8 are all 0 (stored as
    -128, the padding too), so at every position the int16 lane of depth (channel 0, channel 8) multiplies
    -128 twice.  ``safe``: -128 weights on channels 0-7 only (one per lane): proven, exact.  ``violated``: output
    1 also has -128 on channel 8 at tap (1, 1): 2 * 16384 = 32768 wraps to -32768, the proof refuses it."""
    rng = np.random.default_rng(11)
    x = rng.integers(0, 256, (1, 16, 6, 6)).astype("uint8")
    x[:, [0, 8]] = 0
    w = rng.integers(-127, 128, (8, 16, 3, 3)).astype("int8")
    w[:, :8, 1, 1] = -128
    bad = w.copy()
    bad[1, 8, 1, 1] = -128
    plan = paired.plan_paired_conv2d(x.shape, w.shape, "uint8", padding=(1, 1, 1, 1))
    return {f"paired_proof_{k}": (x, v, plan, conv2d_ref(x, v, (1, 1), (1, 1, 1, 1)))
            for k, v in (("safe", w), ("violated", bad))}


PROOF_EDGE = proof_edge_cases()


def bitserial_cases(seed=5) -> dict:
    """The multiply-free bit-serial kernel: ternary weights, 2-4-bit data (full planes included); depth layout: a
    strided first-layer-like conv and a deep one (two int8 blocks); positions layout: a strided, padded batch of
    two and the reference vgg's 32->32 3x3."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, xs, ws, bits, s, pad, lanes in [
            ("c3_s2_b2", (1, 3, 9, 9), (7, 3, 3, 3), 2, 2, (1, 0, 1, 1), "depth"),
            ("c256_b3", (2, 256, 4, 4), (9, 256, 3, 3), 3, 1, (1, 1, 1, 1), "depth"),
            ("positions_c20_s2_b4", (2, 20, 21, 19), (11, 20, 3, 3), 4, 2, (1, 0, 2, 1), "positions"),
            ("positions_c32_b4", (1, 32, 14, 14), (32, 32, 3, 3), 4, 1, (1, 1, 1, 1), "positions")]:
        x = rng.integers(0, 1 << bits, xs)
        x.flat[rng.integers(0, x.size, x.size // 3)] = (1 << bits) - 1
        x, w = x.astype("uint8"), rng.integers(-1, 2, ws).astype("int8")
        plan = bitserial.plan_bitserial_conv2d(xs, ws, bits, (s, s), pad, lanes=lanes)
        out[f"bitserial_{name}"] = (x, w, plan, conv2d_ref(x, w, (s, s), pad))
    return out


BITSERIAL = bitserial_cases()
COUNTED = ("conv3x3_int8_int16", "conv1x1_uint8_int16")
WIDENING = ("smull", "smull2", "smlal", "smlal2", "umull", "umull2", "umlal", "umlal2")     # + every paired case: block counts checked


def _export(lib, path):
    lib.export_library(str(path), fcompile=arm_emulation.cross_compiler())


def _model_under_qemu(work, name: str, lib, images) -> np.ndarray:
    """The outputs of ``lib`` (a model built for the Pi) on ``images``, run alone by ``arm_runner.py`` under qemu
    in the folder ``work``."""
    np.savez(work / "images.npz", x=images)
    _export(lib, work / f"{name}.so")
    (work / "manifest.json").write_text(json.dumps({"kernels": [], "models": [
        {"name": name, "lib": f"{name}.so", "inputs": "images.npz"}]}))
    arm_tools.require_emulator().run_python(ref.HERE / "arm_runner.py", str(work))
    with np.load(work / "results.npz") as res:
        return res[name]


def _kernel_case(work, name, plan, funcs, x, w, expected, blocks=None):
    """Pack on the host, cross-compile the kernel, and describe the call for arm_runner.py; with a ``blocks``
    dict, the kernel is the block-counting copy of ``tools/kernel_cost.py`` (its blocks go there)."""
    pack_func, offset_func, kernel_func = funcs
    n_out = plan.out_channels if hasattr(plan, "out_channels") else plan.outputs
    packed = tvm.runtime.empty(plan.packed_weight_shape, "int8")
    tvm.tirx.build(pack_func, target=HOST)(tvm.runtime.tensor(w), packed)
    inputs = {"data": x, "packed": packed.numpy()}
    if offset_func is not None:
        offset = tvm.runtime.empty((n_out,), getattr(plan, "offset_dtype", "int32"))
        tvm.tirx.build(offset_func, target=HOST)(tvm.runtime.tensor(w), offset)
        inputs["offset"] = offset.numpy()
    np.savez(work / f"{name}.npz", **inputs)
    lib = tvm.tirx.build(kernel_func.with_attr("global_symbol", "kernel"), target=RPI4)
    case = {"name": name, "lib": f"{name}.so", "inputs": f"{name}.npz", "args": list(inputs), "entry": "kernel",
            "out_shape": list(expected.shape), "out_dtype": getattr(plan, "acc_dtype", "int32")}
    if blocks is None:
        _export(lib, work / f"{name}.so")
    else:
        blocks[name] = kernel_cost.instrumented_library(lib, work / f"{name}.so")
        case["counters"] = len(blocks[name])
    return case


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

    blocks = {}
    for name, (x, w, plan, exp) in PAIRED.items():
        expected[name] = exp
        manifest["kernels"].append(_kernel_case(work, name, plan, paired.paired_primfuncs(plan), x, w, exp, blocks))
    for name, (x, w, plan, exp) in PROOF_EDGE.items():
        expected[name] = exp
        manifest["kernels"].append(_kernel_case(work, name, plan, paired.paired_primfuncs(plan), x, w, exp))
    for name in COUNTED:      # a block-counting copy of some int16 kernels (kernel_cost.py)
        xs, ws, dtype, acc, attrs = CONVS[name]
        x, w = ref.random_operands(rng, xs, ws, dtype, acc, int(np.prod(ws[1:])))
        attrs = {"strides": (1, 1), "padding": (0, 0, 0, 0), "dilation": (1, 1), "groups": 1, **attrs}
        plan = plan_conv2d(xs, ws, dtype, acc, attrs["strides"], attrs["padding"], attrs["dilation"],
                           attrs["groups"], target=RPI4)
        expected[f"{name}_counted"] = ref.conv2d_ref(x, w, attrs["strides"], attrs["padding"], attrs["dilation"],
                                                     attrs["groups"])
        expected[f"{name}_counted__plan"] = plan
        manifest["kernels"].append(_kernel_case(work, f"{name}_counted", plan, conv2d_primfuncs(plan), x, w,
                                                expected[f"{name}_counted"], blocks))
    expected["__blocks"] = blocks
    for name, (x, w, plan, exp) in BITSERIAL.items():      # weight masks packed in numpy, as at compile time
        expected[name] = exp
        np.savez(work / f"{name}.npz", data=x, masks=bitserial.pack_weight_masks(w, plan),
                 offset=bitserial.weight_offset(w, plan))
        lib = tvm.tirx.build(bitserial.bitserial_primfunc(plan, batch=x.shape[0]).with_attr("global_symbol", "kernel"),
                             target=RPI4)
        _export(lib, work / f"{name}.so")
        manifest["kernels"].append({"name": name, "lib": f"{name}.so", "inputs": f"{name}.npz",
                                    "args": ["data", "masks", "offset"], "entry": "kernel", "out_shape": list(exp.shape),
                                    "out_dtype": "int32"})

    images = fashion_mnist("test", limit=N_IMAGES).inputs
    np.savez(work / "images.npz", x=images)
    register()                      # tvm.compile's default pipeline then uses our kernels
    import tvm_fxp
    from tvm_fxp.deploy import layer_kernels

    for bits in (4, 8):
        q = ref.quantized_vgg(bits)
        expected[f"vgg_{bits}bit"] = ref.run_host(q.simulated(), images)
        realized = q.realized(accumulator="narrow")
        if bits == 4:       # tvm.compile's default pipeline with our legalization (unfused)
            ex = tvm.compile(realized, target=RPI4)
        else:               # the Pi build (fused epilogues): its int32 layers run the paired gemmlowp/ruy kernel
            ex = tvm_fxp.build(realized, RPI4)
            expected["vgg_8bit__kernels"] = layer_kernels(realized, RPI4)
        _export(ex, work / f"vgg_{bits}bit.so")
        manifest["models"].append({"name": f"vgg_{bits}bit", "lib": f"vgg_{bits}bit.so", "inputs": "images.npz"})
    # both reference models through tvm_fxp.build's pipeline (fused requantize epilogues) for the Pi
    for model in ("fmnist_vgg", "fmnist_resnet"):
        q = ref.quantized_vgg(4, model)
        expected[f"{model}_fused"] = ref.run_host(q.simulated(), images)
        _export(tvm_fxp.build(q.realized(accumulator="narrow"), RPI4), work / f"{model}_fused.so")
        manifest["models"].append({"name": f"{model}_fused", "lib": f"{model}_fused.so", "inputs": "images.npz"})

    # a ternary plan at 4-bit activations through the Pi build: bit-serial where estimated faster, fused epilogues
    q = ref.quantized_ternary("fmnist_vgg")
    realized = q.realized()
    expected["vgg_ternary4"] = ref.run_host(q.simulated(), images)
    expected["vgg_ternary4__kernels"] = layer_kernels(realized, RPI4)
    _export(tvm_fxp.build(realized, RPI4), work / "vgg_ternary4.so")
    manifest["models"].append({"name": "vgg_ternary4", "lib": "vgg_ternary4.so", "inputs": "images.npz"})

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


@pytest.mark.parametrize("name", sorted(BITSERIAL))
def test_bitserial_bit_exact_under_qemu(emulated, name):
    """The multiply-free NEON code (and/cnt/sub/add .16b, saddlv fold) equals the int64 conv."""
    expected, results = emulated
    np.testing.assert_array_equal(results[name].astype(np.int64), expected[name])


@pytest.mark.parametrize("name", sorted(PAIRED))
def test_paired_int32_bit_exact_under_qemu(emulated, name):
    """The gemmlowp/ruy baseline's NEON code (smull/smlal2/sadalp, addp write-back) equals the int64 desc."""
    expected, results = emulated
    np.testing.assert_array_equal(results[name].astype(np.int64), expected[name])


def test_pair_proof_is_what_keeps_the_neon_kernel_exact(emulated):
    """Where ``pair_sums_fit_int16`` holds (a -128 weight in every low lane) the NEON kernel is exact at the
    extreme data; where it fails, the NEON kernel really wraps: output channel 1 is 65536 short everywhere
    (one int16 lane of 32768 per position read as -32768), every other channel exact."""
    expected, results = emulated
    (x, safe, plan, _), (_, bad, _, _) = PROOF_EDGE["paired_proof_safe"], PROOF_EDGE["paired_proof_violated"]
    assert paired.pair_sums_fit_int16(safe, plan) and not paired.pair_sums_fit_int16(bad, plan)
    np.testing.assert_array_equal(results["paired_proof_safe"].astype(np.int64), expected["paired_proof_safe"])
    diff = results["paired_proof_violated"].astype(np.int64) - expected["paired_proof_violated"]
    assert np.all(diff[:, 1] == -65536) and not np.any(np.delete(diff, 1, axis=1)), np.unique(diff)


@pytest.mark.parametrize("name", sorted(PAIRED) + [f"{n}_counted" for n in COUNTED])
def test_block_counts_account_for_every_multiply(emulated, name):
    """kernel_cost's counted run: the instrumented kernel still computes the exact result, and the executed
    multiply lanes (sum over blocks of runs x lanes of its widening multiplies) equal the MACs the plan computes,
    padding included -- so every block's count is real, which the whole-kernel cycle estimates rely on."""
    expected, results = emulated
    np.testing.assert_array_equal(results[name].astype(np.int64), expected[name])
    counts = results[name + "__counts"]
    def macs(insn):     # the 8-bit -> .8h multiply(-accumulate)s of the kernels (not vectorized index division)
        return mul_lanes(insn) if insn.split()[0] in WIDENING and ".8h" in insn.split(",")[0] else 0
    lanes = sum(int(counts[b.index]) * sum(macs(i) for i in b.lines) for b in expected["__blocks"][name])
    if name in PAIRED:
        plan = PAIRED[name][2]
        rows, cols = plan.row_blocks * plan.tile[0], plan.col_blocks * plan.tile[1]
        computed = rows * cols * plan.padded_reduce
    else:
        plan = expected[name + "__plan"]
        kh, kw = plan.kernel
        computed = plan.padded_positions * plan.vector_blocks * plan.lanes * plan.in_per_group * kh * kw
        computed *= plan.groups if plan.layout == "channels" else plan.out_per_group
    assert lanes == computed, (lanes, computed)
    assert kernel_cost.whole_kernel_cycles(expected["__blocks"][name], counts)["cycles"] >= computed / 8


@pytest.mark.parametrize("bits", [4, 8])
def test_realized_vgg_under_qemu_equals_host_simulation(emulated, bits):
    """The whole realized model (int16 accumulators at 4 bits through ``tvm.compile``; int32 at 8 through the Pi
    build, where every int32 layer but the 1-channel stem runs the paired gemmlowp/ruy kernel with its requantize
    epilogue fused, at the model's symbolic batch), cross-compiled and run on emulated aarch64, gives exactly the
    host's float64 simulation."""
    expected, results = emulated
    if bits == 8:
        layouts = {layer: ks[0]["layout"] for layer, ks in expected["vgg_8bit__kernels"].items()}
        assert layouts.pop("conv2d_0") == "channels" and set(layouts.values()) == {"paired"}, layouts
    np.testing.assert_array_equal(results[f"vgg_{bits}bit"], expected[f"vgg_{bits}bit"])


@pytest.mark.parametrize("model", ["fmnist_vgg", "fmnist_resnet"])
def test_reference_models_fused_for_the_pi_under_qemu(emulated, model):
    """Both reference models (int16 accumulators), built for the Pi by ``tvm_fxp.build`` (epilogues fused into
    the kernels), run on emulated aarch64 and give exactly the host's float64 simulation."""
    expected, results = emulated
    np.testing.assert_array_equal(results[f"{model}_fused"], expected[f"{model}_fused"])


def test_ternary_4bit_build_runs_bitserial_bit_exact_under_qemu(emulated):
    """fmnist_vgg with Mellempudi's ternary clusters at 4-bit activations, built for the Pi by ``tvm_fxp.build``:
    the ternary layers, all estimated faster bit-serial than with the paired int32 kernel, run it (conv2d_1-3 with
    positions in lanes, 28- and 14-wide rows, matmul_0 with depth in lanes, each with its requantize epilogue
    fused), the 8-bit first/last layers keep theirs; the emulated aarch64 result equals the host's float64
    simulation exactly."""
    expected, results = emulated
    kernels = {layer: ks[0] for layer, ks in expected["vgg_ternary4__kernels"].items()}
    chosen = {layer: k.get("lanes") for layer, k in kernels.items() if k["layout"] == "bitserial"}
    assert chosen == {"conv2d_1": "positions", "conv2d_2": "positions", "conv2d_3": "positions",
                      "matmul_0": "depth"}, kernels
    assert kernels["conv2d_0"]["layout"] == "channels" and kernels["matmul_1"]["layout"] == "paired"
    assert all(k["activation_bits"] == 4 and k["why"].endswith(": bit-serial") for k in map(kernels.get, chosen))
    np.testing.assert_array_equal(results["vgg_ternary4"], expected["vgg_ternary4"])


@pytest.mark.slow   # ~30 s: its own qemu run
def test_ternary_4bit_resnet_build_under_qemu_equals_host_simulation(tmp_path):
    """fmnist_resnet's ternary plan at 4-bit activations for the Pi: six of its seven ternary convs run bit-serial
    (both layouts, the stride-2 3x3 and the residual blocks), the 1x1 stride-2 shortcut keeps the paired kernel
    (estimated 1.46x the cycles; measured 0.98: 7 of 16 lanes used); bit-exact with the host simulation under qemu."""
    import tvm_fxp
    from tvm_fxp.datasets import fashion_mnist
    from tvm_fxp.deploy import layer_kernels

    q = ref.quantized_ternary("fmnist_resnet")
    realized = q.realized()
    kernels = {layer: ks[0] for layer, ks in layer_kernels(realized, RPI4).items()}
    serial = {layer for layer, k in kernels.items() if k["layout"] == "bitserial"}
    assert serial == {f"conv2d_{i}" for i in (1, 2, 3, 4, 6, 7)}, kernels
    assert "paired int32 kept" in kernels["conv2d_5"]["why"]
    assert {kernels[layer]["lanes"] for layer in serial} == {"positions", "depth"}
    images = fashion_mnist("test", limit=N_IMAGES).inputs
    got = _model_under_qemu(tmp_path, "resnet_ternary4", tvm_fxp.build(realized, RPI4), images)
    np.testing.assert_array_equal(got, ref.run_host(q.simulated(), images))


@pytest.mark.slow   # ~25 s: its own qemu run
def test_paired_int32_build_under_qemu_equals_host_simulation(tmp_path):
    """fmnist_resnet at 8 bits (every layer int32) built for the Pi: the layers whose constant weights prove the
    int16 pair sums run the paired gemmlowp/ruy kernel with the requantize epilogue fused (conv2d through both
    depth orders -- 24 channels gathered im2col, 48 in NHWC --, the strided 1x1, the dense at a symbolic batch),
    the 1-channel stem keeps the widening kernel, and the emulated aarch64 result equals the host's float64
    simulation exactly."""
    import tvm_fxp
    from tvm_fxp.datasets import fashion_mnist
    from tvm_fxp.deploy import layer_kernels

    q = ref.quantized_vgg(8, "fmnist_resnet")
    realized = q.realized(accumulator="narrow")
    layouts = {layer: ks[0]["layout"] for layer, ks in layer_kernels(realized, RPI4).items()}
    assert layouts.pop("conv2d_0") == "channels" and set(layouts.values()) == {"paired"}, layouts
    images = fashion_mnist("test", limit=N_IMAGES).inputs
    got = _model_under_qemu(tmp_path, "resnet_8bit", tvm_fxp.build(realized, RPI4), images)
    np.testing.assert_array_equal(got, ref.run_host(q.simulated(), images))
