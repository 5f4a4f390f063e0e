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

from .reference import relax_main


@pytest.fixture(scope="module")
def tiled(calib_images):
    q = tvm_fxp.quantize(model_path("fmnist_vgg"), calib_images[:64], tvm_fxp.Uniform(6), progress=False)
    return q, q.realized(accumulator="narrow")


@pytest.mark.slow   # the default run: tests/passes/test_realize.py builds vgg's k-tiled plan (fused here) bit-exact
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


def _toy(second, op="conv2d"):
    """Two tiles as Realize writes them: channels [0, 4) and ``second`` of an 8-channel input."""
    from tvm import relax

    shape = [1, 8, 6, 6] if op == "conv2d" else [1, 8]

    def body(bb, x):
        parts = []
        for c0, c1 in ((0, 4), second):
            s = bb.emit(relax.op.strided_slice(x, axes=[len(shape) - 1 if op != "conv2d" else 1],
                                               begin=[c0], end=[c1]))
            if op == "conv2d":
                p = bb.emit(relax.op.nn.conv2d(s, relax.const(np.ones((16, c1 - c0, 3, 3), "int8")),
                                               out_dtype="int16"))
            else:
                p = bb.emit(relax.op.matmul(s, relax.const(np.ones((c1 - c0, 16), "int8")), out_dtype="int16"))
            parts.append(bb.emit(relax.op.astype(p, "int32")))
        return relax.op.add(*parts)
    return relax_main(shape, "uint8", body)


@pytest.mark.parametrize("second, matched", [((4, 8), 1), ((2, 6), 0), ((5, 8), 0)])
def test_only_contiguous_ranges_covering_the_channels_match(second, matched):
    mod = _toy(second)
    assert len(ktiles.match(mod["main"])) == matched
    if matched:
        with targets.host():
            fused = ktiles.FuseKTiles()(mod)
        data = np.random.default_rng(0).integers(0, 256, (1, 8, 6, 6)).astype("uint8")
        outs = []
        for m in (mod, fused):
            ex = tvm.compile(m, target="llvm")
            outs.append(tvm.relax.VirtualMachine(ex, tvm.cpu())["main"](tvm.runtime.tensor(data)).numpy())
        np.testing.assert_array_equal(outs[0], outs[1])
        assert "strided_slice" not in fused["main"].script()


@pytest.mark.parametrize("op", ["conv2d", "matmul"])
def test_fused_on_avx512_only(op):
    """AVX-512 (VNNI conv2d, matmul): one int32 kernel; NEON and AVX2 keep the int16 tiles (on the A72 they
    take 0.52-0.68 of the int32 kernel's cycles: bench/arm_ktiles.py)."""
    mod = _toy((4, 8), op)
    (x, call, ws, _), = ktiles.match(mod["main"]).values()
    vnni = tvm.target.Target({"kind": "llvm", "mcpu": "cascadelake"})
    for target, fused in ((vnni, True), (targets.preset("rpi4"), False),
                          (tvm.target.Target({"kind": "llvm", "mcpu": "haswell"}), False)):
        with target:
            assert ktiles.fusable(ktiles.fused_call(x, call, ws), target) is fused, (op, str(target))
            fuse = ktiles.FuseKTiles()
            fuse(mod)
        assert fuse.fused == int(fused)
