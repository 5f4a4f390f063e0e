"""The fused CPU build pipeline (schedules/cpu_pipeline.py): conv2d/matmul + requantize epilogue in one kernel,
vectorized elementwise kernels, host shape functions built apart -- and none of it changes a result."""

import numpy as np
import pytest
import tvm
from tvm import relax

import tvm_fxp
from tvm_fxp.schedules import host, plan_conv2d, plan_dense, conv2d_primfuncs, dense_primfuncs
from tvm_fxp.schedules import conv2d_vnni
from tvm_fxp.schedules.fuse import FuseEpilogue
from tvm_fxp.schedules.cpu_pipeline import relax_pipeline

from . import reference as ref

HOST = host()


def fused_count(mod) -> int:
    p = FuseEpilogue()
    with HOST:
        p(mod)
    return p.fused


def weighted_ops(mod) -> int:
    return sum(1 for blk in mod["main"].body.blocks for b in blk.bindings
               if isinstance(b.value, relax.Call) and isinstance(b.value.op, tvm.ir.Op)
               and b.value.op.name in ("relax.nn.conv2d", "relax.matmul"))


def run(ex, images):
    return tvm_fxp.Runner(ex).run(images)


@pytest.mark.parametrize("name, bits, acc", [("fmnist_vgg", 4, "narrow"),
                                             pytest.param("fmnist_resnet", 4, "narrow", marks=pytest.mark.slow),
                                             pytest.param("fmnist_resnet", 8, "wide", marks=pytest.mark.slow)])
def test_fused_model_equals_unfused_and_simulation(test_images, name, bits, acc):
    """Every conv2d/matmul of the reference model is fused with its epilogue, and the fused build gives the
    same integers as the unfused graph and as the float64 simulation, at batch 200 and at batch 1."""
    q = ref.quantized_model(name, bits)
    realized = q.realized(accumulator=acc)
    assert fused_count(realized) == weighted_ops(realized) >= 6
    fused = tvm_fxp.build(realized)
    unfused = tvm.compile(realized, target=HOST, relax_pipeline=relax_pipeline(HOST, fuse=False))
    images = test_images.inputs[:200]
    got = run(fused, images)
    np.testing.assert_array_equal(got, run(unfused, images))
    np.testing.assert_array_equal(got, run(tvm_fxp.build(q.simulated()), images))
    one = relax.VirtualMachine(fused, tvm.cpu())
    for i in (0, 7):
        np.testing.assert_array_equal(one["main"](tvm.runtime.tensor(images[i:i + 1])).numpy(), got[i:i + 1])
    assert len(np.unique(got.argmax(1))) >= 3


def test_disabled_builds_without_fusion():
    q = ref.quantized_model("fmnist_vgg", 4)
    realized = q.realized(accumulator="narrow")
    with tvm_fxp.schedules.disabled():
        p = FuseEpilogue()
        with HOST:
            assert p(realized).same_as(realized) and p.fused == 0


def _conv_module(x_shape, w, make_tail):
    """``main(x) = make_tail(conv2d(x, w))`` (int16 accumulator), symbolic batch."""
    def body(bb, x):
        return make_tail(bb, bb.emit(relax.op.nn.conv2d(x, relax.const(w), padding=[1, 1, 1, 1], out_dtype="int16")))
    return ref.relax_main((tvm.tirx.Var("n", "int64"), *x_shape[1:]), "uint8", body)


def _c(v, dtype):
    return relax.const(np.asarray(v, dtype), dtype)


def test_shared_intermediate_stops_the_epilogue():
    """An epilogue value that is also used outside the DAG (here: the biased accumulator feeds a second
    output) cannot be fused away: only the prefix up to it is fused, and results stay exact."""
    rng = np.random.default_rng(5)
    x, w = ref.random_operands(rng, (2, 8, 9, 7), (16, 8, 3, 3), "uint8", "int16", 72)
    bias = rng.integers(-50, 50, (1, 16, 1, 1)).astype("int16")
    shift = rng.integers(1, 4, (1, 16, 1, 1)).astype("int32")

    def tail(bb, acc):
        t = bb.emit(relax.op.add(acc, _c(bias, "int16")))
        r = bb.emit(relax.op.nn.relu(t))
        wide = bb.emit(relax.op.astype(r, "int32"))
        neg = bb.emit(relax.op.astype(relax.op.less(wide, _c(0, "int32")), "int32"))
        s = bb.emit(relax.op.right_shift(relax.op.subtract(relax.op.add(wide, _c(4, "int32")), neg),
                                         relax.const(shift)))
        q = bb.emit(relax.op.astype(relax.op.minimum(relax.op.maximum(s, _c(0, "int32")), _c(255, "int32")),
                                    "uint8"))
        return relax.Tuple([q, t])         # t is used outside the DAG

    mod = _conv_module(x.shape, w, tail)
    assert fused_count(mod) == 1
    fused = relax.VirtualMachine(tvm_fxp.build(mod), tvm.cpu())
    plain = relax.VirtualMachine(tvm.compile(mod, target=HOST, relax_pipeline=relax_pipeline(HOST, fuse=False)),
                                 tvm.cpu())
    a, b = fused["main"](tvm.runtime.tensor(x)), plain["main"](tvm.runtime.tensor(x))
    acc = ref.conv2d_ref(x, w, (1, 1), (1, 1, 1, 1)) + bias
    np.testing.assert_array_equal(a[1].numpy(), acc)
    for i in range(2):
        np.testing.assert_array_equal(a[i].numpy(), b[i].numpy())
    expect = np.clip((np.maximum(acc, 0) + 4) >> shift, 0, 255)
    np.testing.assert_array_equal(a[0].numpy(), expect)


@pytest.mark.parametrize("acc", ["int16", "int32"])
@pytest.mark.parametrize("dtype", ["uint8", "int8"])
def test_int16_weight_kernels(acc, dtype):
    """Weights wider than 8 bits (stored as int16) run on the kernels too, exactly."""
    rng = np.random.default_rng(11)
    w = rng.integers(-300, 301, (24, 3, 3, 3)).astype("int16")
    w.flat[rng.integers(0, w.size, 8)] = -300
    xmax = ((1 << 15) - 1) // int(np.abs(w.astype(np.int64)).reshape(24, -1).sum(1).max()) if acc == "int16" else 127
    x = rng.integers(0 if dtype == "uint8" else -xmax, xmax + 1, (2, 3, 11, 9)).astype(dtype)
    plan = plan_conv2d(x.shape, w.shape, dtype, acc, padding=(1, 1, 1, 1), target=HOST, weight_dtype="int16")
    assert not plan.offset_data
    got = ref.run_kernel(conv2d_primfuncs(plan), plan, x, w, (2, 24, 11, 9), HOST, 24)
    np.testing.assert_array_equal(got, ref.conv2d_ref(x, w, (1, 1), (1, 1, 1, 1)))
    b = rng.integers(-600, 601, (48, 10)).astype("int16")
    amax = ((1 << 15) - 1) // int(np.abs(b.astype(np.int64)).sum(0).max()) if acc == "int16" else 127
    a = rng.integers(0 if dtype == "uint8" else -amax, amax + 1, (3, 48)).astype(dtype)
    dplan = plan_dense(a.shape, b.shape, dtype, acc, target=HOST, weight_dtype="int16")
    np.testing.assert_array_equal(ref.run_kernel(dense_primfuncs(dplan), dplan, a, b, (3, 10), HOST, 10),
                                  ref.dense_ref(a, b))


def test_elementwise_kernels_are_vectorized_and_host_functions_separate():
    """After the pipeline no fused elementwise PrimFunc keeps a full-size intermediate per op, and the VM's
    shape functions are not in the kernels' module."""
    from tvm.relax.backend.cpu_generic import pipeline as cpu

    from tvm_fxp.schedules.elementwise import ScheduleElementwise

    q = ref.quantized_model("fmnist_resnet", 4)
    realized = q.realized(accumulator="narrow")
    with HOST:
        lowered = tvm.transform.Sequential([FuseEpilogue(), *cpu.legalize_passes(HOST), ScheduleElementwise])(
            realized)
    for gv, f in lowered.functions.items():
        if isinstance(f, tvm.tirx.PrimFunc) and gv.name_hint.startswith("fused_"):
            assert "tvm_fxp.scheduled" in f.attrs, gv.name_hint
            assert "T.vectorized" in f.script() or "T.sblock_alloc_buffer" not in f.script(), gv.name_hint
    final = relax_pipeline(HOST)(realized)
    assert not any(isinstance(f, tvm.tirx.PrimFunc) and "tirx.is_host_func" in (f.attrs or {})
                   for f in final.functions.values())
    assert len(final.attrs["external_mods"]) >= 1


VNNI = tvm_fxp.schedules.kernel_config(HOST, "int16").vnni


@pytest.mark.skipif(not VNNI, reason="host has no AVX-512 VNNI")
@pytest.mark.parametrize("acc", ["int16", "int32"])
@pytest.mark.parametrize("dtype", ["uint8", "int8"])
@pytest.mark.parametrize("shape, strides, padding, dilation", [
    ((2, 16, 12, 11), (1, 1), (1, 1, 1, 1), (1, 1)),
    ((1, 6, 13, 9), (2, 1), (1, 0, 2, 1), (1, 2)),     # channels not a multiple of 4, asymmetric padding
    ((2, 1, 12, 11), (1, 1), (1, 1, 1, 1), (1, 1)),    # a grey stem: 3 kernel columns folded into each word
    ((1, 1, 13, 9), (2, 2), (1, 0, 2, 1), (2, 2)),     # folded, with strides, dilation and uneven padding
])
def test_vnni_conv2d_exact(acc, dtype, shape, strides, padding, dilation):
    """Layout "vnni" (vpdpbusd, int32 sums narrowed to the accumulator dtype) equals the int64 reference,
    with extremes planted; int8 data runs as x + 128 with -128 * sum(w) added back."""
    rng = np.random.default_rng(3)
    c = shape[1]
    x, w = ref.random_operands(rng, shape, (20, c, 3, 3), dtype, acc, c * 9)
    plan = plan_conv2d(x.shape, w.shape, dtype, acc, strides, padding, dilation, target=HOST)
    assert plan.layout == "vnni" and conv2d_vnni.folded_taps(plan) == (3 if c == 1 else 1)
    expected = ref.conv2d_ref(x, w, strides, padding, dilation)
    got = ref.run_kernel(conv2d_primfuncs(plan), plan, x, w, expected.shape, HOST, 20)
    np.testing.assert_array_equal(got, expected)
    assert "vpdpbusd" in tvm.tirx.build(conv2d_primfuncs(plan)[2], target=HOST).inspect_source("asm")


@pytest.mark.skipif(not VNNI, reason="host has no AVX-512 VNNI")
@pytest.mark.parametrize("dtype", ["uint8", "int8"])
@pytest.mark.parametrize("shape, strides, padding, dilation", [
    ((2, 1, 12, 11), (1, 1), (1, 1, 1, 1), (1, 1)),    # a grey stem (kernel columns folded too)
    ((1, 6, 13, 9), (2, 1), (1, 0, 2, 1), (1, 2)),
])
def test_vnni_conv2d_int16_weights_exact(dtype, shape, strides, padding, dilation):
    """int16 weights on layout "vnni": each split into int8 parts lo + 256 * hi, summed in two sets of vectors
    and combined at write-back -- equals the int64 reference, with the extreme weights -32768 and 32639 planted."""
    rng = np.random.default_rng(5)
    c = shape[1]
    x = rng.integers(0, 256, shape) if dtype == "uint8" else rng.integers(-128, 128, shape)
    w = rng.integers(-300, 301, (20, c, 3, 3))
    w.flat[rng.integers(0, w.size, 3)] = -32768
    w.flat[rng.integers(0, w.size, 3)] = 32639
    x, w = x.astype(dtype), w.astype("int16")
    plan = plan_conv2d(x.shape, w.shape, dtype, "int32", strides, padding, dilation, target=HOST, layout="vnni",
                       weight_dtype="int16")
    assert conv2d_vnni.weight_parts(plan) == 2 and plan.packed_weight_shape[0] == 4
    expected = ref.conv2d_ref(x, w, strides, padding, dilation)
    got = ref.run_kernel(conv2d_primfuncs(plan), plan, x, w, expected.shape, HOST, 20)
    np.testing.assert_array_equal(got, expected)


def test_epilogue_without_bias_on_dense():
    """An epilogue that starts with relu on the accumulator (no bias add) fuses into the matmul too."""
    rng = np.random.default_rng(9)
    a, b = ref.random_operands(rng, (3, 40), (40, 24), "int8", "int16", 40)

    def body(bb, x):
        r = bb.emit(relax.op.nn.relu(bb.emit(relax.op.matmul(x, relax.const(b), out_dtype="int16"))))
        return relax.op.astype(relax.op.minimum(relax.op.right_shift(r, _c(2, "int16")), _c(127, "int16")), "int8")

    mod = ref.relax_main((tvm.tirx.Var("n", "int64"), 40), "int8", body)
    assert fused_count(mod) == 1
    got = relax.VirtualMachine(tvm_fxp.build(mod), tvm.cpu())["main"](tvm.runtime.tensor(a)).numpy()
    np.testing.assert_array_equal(got, np.minimum(np.maximum(ref.dense_ref(a, b), 0) >> 2, 127))
