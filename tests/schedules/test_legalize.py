"""The Relax legalization override (schedules/legalize.py): dispatch, fallback, and a whole model."""

import numpy as np
import pytest
import tvm
from tvm import relax

import tvm_fxp
from tvm_fxp.schedules import dispatched_kernels, host, kernel_config, original_legalize

from . import reference as ref

HOST = host()


def single_op_module(make, data_shape, data_dtype, weight=None):
    """``main(x[, w]) = make(x, w)`` with a symbolic batch; the weight is a constant unless ``weight`` is None."""
    n = tvm.tirx.Var("n", "int64")
    params = []
    if isinstance(weight, np.ndarray):
        w = relax.const(weight)
    else:
        w = relax.Var("w", relax.TensorType(weight[0], weight[1]))
        params.append(w)
    return ref.relax_main((n, *data_shape[1:]), data_dtype, lambda bb, x: bb.emit(make(x, w)), params)


def run(mod, *args):
    vm = relax.VirtualMachine(tvm.compile(mod, target=HOST, relax_pipeline=tvm_fxp.schedules.pipeline(HOST)), tvm.cpu())
    return vm["main"](*[tvm.runtime.tensor(a) for a in args]).numpy()


def test_int16_conv2d_is_dispatched_and_exact():
    rng = np.random.default_rng(0)
    x, w = ref.random_operands(rng, (3, 8, 10, 9), (16, 8, 3, 3), "uint8", "int16", 72)
    mod = single_op_module(lambda a, b: relax.op.nn.conv2d(a, b, strides=[2, 1], padding=[1, 0, 1, 2],
                                                           out_dtype="int16"), x.shape, "uint8", w)
    layout = tvm_fxp.schedules.plan_conv2d(x.shape, w.shape, "uint8", "int16", (2, 1), (1, 0, 1, 2),
                                           target=HOST).layout             # "vnni" on AVX-512 VNNI hosts
    assert dispatched_kernels(mod, HOST) == {f"conv2d_uint8_int16_{layout}": 1}
    got = run(mod, x)
    assert got.dtype == np.int16
    np.testing.assert_array_equal(got, ref.conv2d_ref(x, w, (2, 1), (1, 0, 1, 2)))


def test_non_constant_weight_is_packed_at_run_time():
    rng = np.random.default_rng(1)
    a, b = ref.random_operands(rng, (2, 50), (50, 20), "int8", "int16", 50)
    mod = single_op_module(lambda x, w: relax.op.matmul(x, w, out_dtype="int16"), a.shape, "int8",
                           ((50, 20), "int8"))
    assert dispatched_kernels(mod, HOST) == {"dense_int8_int16": 1, "dense_weight_pack": 1}
    np.testing.assert_array_equal(run(mod, a, b), ref.dense_ref(a, b))


@pytest.mark.parametrize("case", ["float32", "int64_out", "nhwc", "batched_matmul"])
def test_other_ops_fall_back_to_tvm(case):
    rng = np.random.default_rng(2)
    if case == "float32":
        x, w = rng.normal(size=(1, 4, 6, 6)).astype("float32"), rng.normal(size=(8, 4, 3, 3)).astype("float32")
        mod = single_op_module(lambda a, b: relax.op.nn.conv2d(a, b), x.shape, "float32", w)
        expected = ref.conv2d_ref(x.astype(np.float64), w.astype(np.float64))
    elif case == "int64_out":
        x, w = rng.integers(-128, 128, (1, 4, 6, 6)).astype("int8"), rng.integers(-128, 128, (8, 4, 3, 3)).astype("int8")
        mod = single_op_module(lambda a, b: relax.op.nn.conv2d(a, b, out_dtype="int64"), x.shape, "int8", w)
        expected = ref.conv2d_ref(x, w)
    elif case == "nhwc":
        x, w = rng.integers(-8, 8, (1, 6, 6, 4)).astype("int8"), rng.integers(-8, 8, (8, 4, 3, 3)).astype("int8")
        mod = single_op_module(lambda a, b: relax.op.nn.conv2d(a, b, data_layout="NHWC", out_dtype="int16"),
                               x.shape, "int8", w)
        expected = ref.conv2d_ref(x.transpose(0, 3, 1, 2), w).transpose(0, 2, 3, 1)
    else:
        x, w = rng.integers(-8, 8, (2, 3, 5)).astype("int8"), rng.integers(-8, 8, (5, 4)).astype("int8")
        mod = single_op_module(lambda a, b: relax.op.matmul(a, b, out_dtype="int16"), x.shape, "int8", w)
        expected = np.einsum("bmk,kn->bmn", x.astype(np.int64), w.astype(np.int64))
    assert dispatched_kernels(mod, HOST) == {}
    np.testing.assert_allclose(run(mod, x), expected, rtol=1e-5, atol=1e-4)


def test_without_a_target_in_scope_tvm_legalizes():
    rng = np.random.default_rng(3)
    x, w = ref.random_operands(rng, (1, 4, 6, 6), (8, 4, 3, 3), "int8", "int16", 36)
    mod = single_op_module(lambda a, b: relax.op.nn.conv2d(a, b, out_dtype="int16"), x.shape, "int8", w)
    legal = relax.transform.LegalizeOps()(mod)
    assert not any(isinstance(f, tvm.tirx.PrimFunc) and f.attrs is not None and "tvm_fxp.kernel" in f.attrs
                   for f in legal.functions.values())
    assert callable(original_legalize("relax.nn.conv2d"))


def weighted_ops(mod) -> int:
    return sum(1 for b in mod["main"].body.blocks for b in b.bindings
               if isinstance(b.value, relax.Call) and isinstance(b.value.op, tvm.ir.Op)
               and b.value.op.name in ("relax.nn.conv2d", "relax.matmul"))


@pytest.mark.parametrize("bits, acc", [(4, "int16"), (8, "int32")])
def test_realized_vgg_through_kernels_equals_simulation(test_images, bits, acc):
    """fmnist_vgg realized with narrow accumulators (int16 everywhere at 4 bits; at 8 bits int32 at least
    for some layers, int16 wherever a layer's bound allows it): every conv2d and matmul runs on a kernel of
    this package, with its weights packed at compile time, and the outputs equal the float64 simulation bit
    for bit."""
    q = ref.quantized_vgg(bits)
    realized = q.realized(accumulator="narrow")
    everything = dispatched_kernels(realized, HOST)
    kernels = {tag: n for tag, n in everything.items() if not tag.startswith("max_pool2d")}
    assert not any("weight" in tag for tag in kernels), kernels          # constants packed at compile time
    assert sum(kernels.values()) == weighted_ops(realized) >= 6, kernels
    if kernel_config(HOST, "int32").arch.startswith("x86"):             # its two max pools on pool.py's kernel
        assert sum(n for tag, n in everything.items() if tag.startswith("max_pool2d")) == 2, everything
    accs = {tag.split("_")[2] for tag in kernels}
    assert acc in accs and accs <= ({"int16"} if acc == "int16" else {"int16", "int32"}), kernels
    images = test_images.inputs[:200]
    real = ref.run_host(realized, images)
    np.testing.assert_array_equal(real, ref.run_host(q.simulated(), images))
    assert len(np.unique(real.argmax(1))) >= 3            # not a degenerate (e.g. constant) output


@pytest.mark.parametrize("groups", [1, 6])
def test_float64_simulation_conv2d_is_dispatched_and_exact(groups):
    """The simulation's convs (float64 fake-quantized operands: integers times 2**-f) run on the float64 form
    of the kernels, bit for bit equal to TVM's own legalization (every product and sum is exact)."""
    rng = np.random.default_rng(4 + groups)
    x = np.ldexp(rng.integers(-128, 128, (5, 12, 9, 11)), -5).astype(np.float64)
    w = np.ldexp(rng.integers(-2**11, 2**11, (12, 12 // groups, 3, 3)), -13).astype(np.float64)
    conv = lambda a, b: relax.op.nn.conv2d(a, b, strides=[2, 1], padding=[1, 0, 1, 2], groups=groups,  # noqa: E731
                                           out_dtype="float64")
    mod = single_op_module(conv, x.shape, "float64", ((12, 12 // groups, 3, 3), "float64"))
    kernels = dispatched_kernels(mod, HOST)
    assert kernels.pop("conv2d_weight_pack") == 1 and list(kernels) == [
        "conv2d_float64_float64_" + ("channels" if groups == 1 else "groups")], kernels
    got = run(mod, x, w)
    with tvm_fxp.schedules.disabled():
        assert dispatched_kernels(mod, HOST) == {}
        np.testing.assert_array_equal(got, run(mod, x, w))
    np.testing.assert_array_equal(got, ref.conv2d_ref(x, w, (2, 1), (1, 0, 1, 2), groups=groups))


def test_float64_simulation_matmul_is_dispatched_and_exact():
    rng = np.random.default_rng(6)
    a = np.ldexp(rng.integers(-2**15, 2**15, (7, 300)), -9).astype(np.float64)
    b = np.ldexp(rng.integers(-128, 128, (300, 10)), -7).astype(np.float64)
    mod = single_op_module(lambda x, w: relax.op.matmul(x, w, out_dtype="float64"), a.shape, "float64",
                           (b.shape, "float64"))
    assert dispatched_kernels(mod, HOST) == {"dense_float64_float64": 1, "dense_weight_pack": 1}
    got = run(mod, a, b)
    with tvm_fxp.schedules.disabled():
        np.testing.assert_array_equal(got, run(mod, a, b))
    np.testing.assert_array_equal(got, ref.dense_ref(a, b))


def test_bitserial_choice_reads_the_producers_saturate():
    """Where the build learns a layer's data width: Realize's ``minimum(maximum(x, 0), 15)`` before the uint8 cast,
    also through a max pool and the flatten before the dense layer; unknown (None) when the producer shows no
    saturate (a model input) or its lower bound could wrap.  The decision needs that range, ternary weights and an
    aarch64 target, and weighs the two estimates."""
    from tvm_fxp.methods.mellempudi2017 import Mellempudi2017
    from tvm_fxp.passes.relax_utils import main_bindings, op_name
    from tvm_fxp.schedules import legalize as L
    from tvm_fxp.schedules import preset

    q = ref.quantized_ternary("fmnist_vgg")
    bindings = list(main_bindings(q.realized()["main"]))
    bound = {b.var: b.value for b in bindings}
    calls = [b.value for b in bindings if op_name(b.value) in ("relax.nn.conv2d", "relax.matmul")]
    assert [L.data_upper_bound(c.args[0], bound.get) for c in calls] == [15] * len(calls)
    rpi4 = preset("rpi4")
    conv3 = calls[3]
    weight = L.constant_value(conv3.args[1], bound.get)
    plan, why = L.conv2d_bitserial(conv3, rpi4, weight, 15)
    assert plan.bits == 4 and plan.lanes == "positions" and why.endswith(": bit-serial"), why
    assert L.conv2d_bitserial(conv3, rpi4, weight, 7)[0].bits == 3            # 3 bit planes: data <= 7
    assert L.conv2d_bitserial(conv3, rpi4, weight, None) == (
        None, "ternary weights, but the data's range is not proven by its producer: paired int32 kernel")
    assert "needs more than 4 bit planes" in L.conv2d_bitserial(conv3, rpi4, weight, 255)[1]
    assert L.conv2d_bitserial(conv3, HOST, weight, 15) == (None, None)           # x86: not a candidate
    assert L.conv2d_bitserial(conv3, rpi4, weight * 2, 15) == (None, None)       # not ternary
    assert L.conv2d_plan_for(conv3, rpi4, weight, 15).layout == "bitserial"
    assert L.conv2d_plan_for(conv3, rpi4, weight, None).layout == "paired"
    x = relax.Var("x", relax.TensorType((1, 4), "int32"))
    sat = relax.op.minimum(relax.op.maximum(x, relax.const(-1, "int32")), relax.const(15, "int32"))
    v = relax.Var("v", relax.TensorType((1, 4), "int32"))
    assert L.data_upper_bound(v, {v: sat}.get) is None                            # -1 would wrap as uint8
    assert L.data_upper_bound(x, {}.get) is None
