"""``FuseKTiles``: a k-tiled int16 layer (Realize's narrow policy) becomes one kernel where that is faster,
giving the same integers as the tiles and the simulation."""

from unittest import mock

import numpy as np
import pytest
import tvm

import tvm_fxp
from conftest import model_path
from tvm_fxp.passes.realize import realized_accumulators
from tvm_fxp.schedules import ktiles, targets


@pytest.fixture(scope="module")
def tiled(calib_images):
    q = tvm_fxp.quantize(model_path("fmnist_vgg"), calib_images[:64], tvm_fxp.Uniform(6), progress=False)
    return q, q.realized(accumulator="narrow")


def test_tiles_fuse_into_one_kernel_bit_exact(tiled, test_images):
    q, narrow = tiled
    layers = {k: v for k, v in realized_accumulators(narrow).items() if "k-tiles" in v}
    found = ktiles.match(narrow["main"])
    assert len(found) == len(layers) >= 2                  # every tiled layer is recognised
    host = targets.host()
    with host:
        kinds = [(str(op.op.name), ktiles.fusable(ktiles.fused_call(x, op, ws), host))
                 for x, op, ws, _ in found.values()]
        fused = ktiles.FuseKTiles()(narrow)
    assert sum(f for _, f in kinds) >= 1 and all(f for k, f in kinds if k == "relax.matmul"), kinds
    calls = [str(b.value.op.name) for blk in fused["main"].body.blocks for b in blk.bindings
             if hasattr(b.value, "op") and hasattr(b.value.op, "name")]
    assert calls.count("relax.strided_slice") == sum(len(ws) for (_, _, ws, _), (_, f) in
                                                     zip(found.values(), kinds) if not f)
    x = test_images.inputs[:128]
    sim = tvm_fxp.Runner(tvm_fxp.build(q.simulated())).run(x)
    np.testing.assert_array_equal(tvm_fxp.Runner(tvm_fxp.build(narrow)).run(x), sim)
    with mock.patch.object(ktiles, "fusable", lambda call, target: False):     # the separate tile kernels
        np.testing.assert_array_equal(tvm_fxp.Runner(tvm_fxp.build(narrow)).run(x), sim)


@pytest.mark.parametrize("second, matched", [((4, 8), 1), ((2, 6), 0), ((5, 8), 0)])
def test_only_contiguous_ranges_covering_the_channels_match(second, matched):
    from tvm import relax

    x = relax.Var("x", relax.TensorType([1, 8, 6, 6], "int8"))
    bb = relax.BlockBuilder()
    with bb.function("main", [x]):
        with bb.dataflow():
            parts = []
            for c0, c1 in ((0, 4), second):
                s = bb.emit(relax.op.strided_slice(x, axes=[1], begin=[c0], end=[c1]))
                wt = relax.const(np.ones((4, c1 - c0, 3, 3), "int8"))
                p = bb.emit(relax.op.nn.conv2d(s, wt, out_dtype="int16"))
                parts.append(bb.emit(relax.op.astype(p, "int32")))
            out = bb.emit_output(relax.op.add(*parts))
        bb.emit_func_output(out)
    func = bb.get()["main"]
    assert len(ktiles.match(func)) == matched
    if matched:
        with targets.host():
            fused = ktiles.FuseKTiles()(bb.get())
        data = np.random.default_rng(0).integers(-128, 128, (1, 8, 6, 6)).astype("int8")
        outs = []
        for mod in (bb.get(), fused):
            ex = tvm.compile(mod, target="llvm")
            outs.append(tvm.relax.VirtualMachine(ex, tvm.cpu())["main"](tvm.runtime.tensor(data)).numpy())
        np.testing.assert_array_equal(outs[0], outs[1])
        assert "strided_slice" not in fused["main"].script()


def test_neon_keeps_the_tiles(tiled):
    """On the A72 the int16 tiles take 0.52-0.68 of the int32 kernel's cycles (bench/arm_ktiles.py): kept."""
    _, narrow = tiled
    rpi4 = targets.preset("rpi4")
    with rpi4:
        assert all(not ktiles.fusable(ktiles.fused_call(x, op, ws), rpi4)
                   for x, op, ws, _ in ktiles.match(narrow["main"]).values())
        fuse = ktiles.FuseKTiles()
        fuse(narrow)
    assert fuse.fused == 0
