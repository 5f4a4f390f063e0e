"""``BlockLayout`` (schedules/layout.py): Before/Expected structure of the rewrite, and the built module's exact
integers with and without it."""

import numpy as np
import pytest
import tvm
from tvm import relax

from tvm_fxp.schedules import cpu_pipeline, host, kernel_config
from tvm_fxp.schedules.layout import BlockLayout

from .reference import relax_main

HOST = host()
pytestmark = pytest.mark.skipif(not kernel_config(HOST, "int32").vnni, reason="the host has no AVX-512 VNNI")
B = "NCHW16c"
X = (1, 16, 8, 8)           # the input of every module here: uint8 NCHW
RNG = np.random.default_rng(3)
W1 = RNG.integers(-128, 128, (24, 16, 1, 1), dtype=np.int8)
W2 = RNG.integers(-128, 128, (16, 24, 3, 3), dtype=np.int8)
W3 = RNG.integers(-128, 128, (24, 16, 1, 1), dtype=np.int8)
W4 = RNG.integers(-128, 128, (16, 48, 1, 1), dtype=np.int8)
BIAS = RNG.integers(-5000, 5000, (1, 24, 1, 1), dtype=np.int32)


def _requantize(bb, acc, bias, shift=9):
    """The realized epilogue: bias (per channel), rounding shift, saturate to uint8."""
    t = bb.emit(relax.op.add(acc, bias))
    t = bb.emit(relax.op.right_shift(t, relax.const(shift, "int32")))
    t = bb.emit(relax.op.maximum(t, relax.const(0, "int32")))
    t = bb.emit(relax.op.minimum(t, relax.const(255, "int32")))
    return bb.emit(relax.op.astype(t, "uint8"))


def _conv(bb, x, w, padding=0, data=None, out=None, groups=1):
    return bb.emit(relax.op.nn.conv2d(x, relax.const(w), padding=padding, groups=groups, out_dtype="int32",
                                      data_layout=data or "NCHW", out_layout=out or "NCHW"))


def _blocked(c: np.ndarray, width: int, phys=None) -> np.ndarray:
    full = np.zeros(width, c.dtype)
    full[np.arange(c.size) if phys is None else phys] = c.reshape(-1)
    return full.reshape(1, width // 16, 1, 1, 16)


def _pad(w: np.ndarray, out: int, cols=None, width=None) -> np.ndarray:
    oc, c = w.shape[:2]
    p = np.zeros((out, width or c, *w.shape[2:]), np.int8)
    p[:oc, np.arange(c) if cols is None else cols] = w
    return p


def before_chain():
    """conv 1x1 16->24 + requantize, max pool, conv 3x3 24->16 (the result)."""
    def body(bb, x):
        u = _requantize(bb, _conv(bb, x, W1), relax.const(BIAS))
        m = bb.emit(relax.op.nn.max_pool2d(u, pool_size=(2, 2), strides=(2, 2)))
        return _conv(bb, m, W2, padding=1)
    return relax_main(X, "uint8", body)


def expected_chain():
    """The conv writes (1, 2, 8, 8, 16) (24 channels padded to 32, bias blocked alike), the epilogue and the pool
    run blocked, the 3x3 conv reads it (zero weights for the 8 padding channels) and writes NCHW."""
    def body(bb, x):
        u = _requantize(bb, _conv(bb, x, _pad(W1, 32), out=B), relax.const(_blocked(BIAS, 32)))
        m = bb.emit(relax.op.nn.max_pool2d(u, pool_size=(2, 2), strides=(2, 2), layout=B, out_layout=B))
        return _conv(bb, m, _pad(W2, 16, width=32), padding=1, data=B)
    return relax_main(X, "uint8", body)


def before_concat():
    """Two 16->24 convs concatenated (a fire module's expand), read by a 1x1 conv and also returned."""
    def body(bb, x):
        a = _requantize(bb, _conv(bb, x, W1), relax.const(BIAS))
        b = _requantize(bb, _conv(bb, x, W3), relax.const(BIAS))
        cat = bb.emit(relax.op.concat([a, b], axis=1))
        return relax.Tuple([_conv(bb, cat, W4), cat])
    return relax_main(X, "uint8", body)


def expected_concat():
    """The concat joins blocks: its 48 real channels sit at 0..23 and 32..55 of 64; the conv reading it scatters
    its weights by that map; the returned concat goes back to NCHW once (layout_transform, then take)."""
    phys = np.concatenate([np.arange(24), 32 + np.arange(24)])

    def body(bb, x):
        a = _requantize(bb, _conv(bb, x, _pad(W1, 32), out=B), relax.const(_blocked(BIAS, 32)))
        b = _requantize(bb, _conv(bb, x, _pad(W3, 32), out=B), relax.const(_blocked(BIAS, 32)))
        cat = bb.emit(relax.op.concat([a, b], axis=1))
        y = _conv(bb, cat, _pad(W4, 16, cols=phys, width=64), data=B)
        t = bb.emit(relax.op.layout_transform(cat, index_map=lambda n, cb, h, w, k: (n, cb * 16 + k, h, w)))
        t = bb.emit(relax.op.take(t, relax.const(phys.astype("int32")), axis=1))
        return relax.Tuple([y, t])
    return relax_main(X, "uint8", body)


@pytest.mark.parametrize("before,expected", [(before_chain, expected_chain), (before_concat, expected_concat)])
def test_block_layout_rewrites(before, expected):
    with tvm.target.Target(HOST):
        after = BlockLayout()(before())
    tvm.ir.assert_structural_equal(after, expected())


def test_nothing_without_vnni():
    mod = before_chain()
    with tvm.target.Target({"kind": "llvm", "mcpu": "haswell"}):
        tvm.ir.assert_structural_equal(BlockLayout()(mod), mod)


@pytest.mark.parametrize("before", [before_chain, before_concat])
def test_blocked_build_is_bit_exact(before):
    """The built module gives the same integers with and without the pass (and the NCHW build is checked
    against the simulation elsewhere)."""
    x = np.random.default_rng(5).integers(0, 256, (1, 16, 8, 8), dtype=np.uint8)
    outs = []
    for blocked in (False, True):
        vm = relax.VirtualMachine(cpu_pipeline.build(before(), HOST, blocked=blocked), tvm.cpu())
        res = vm["main"](tvm.runtime.tensor(x))
        outs.append([r.numpy() for r in res] if isinstance(res, tvm.ir.Array) or hasattr(res, "__len__")
                    and not hasattr(res, "numpy") else [res.numpy()])
    for a, b in zip(*outs):
        np.testing.assert_array_equal(a, b)


def before_residual():
    """A bottleneck's end: conv -> requantize to int8 (the shortcut), conv -> requantize to int8, add of both
    widened to int32, requantize to uint8."""
    def body(bb, x):
        def branch(w, bias):
            t = bb.emit(relax.op.add(_conv(bb, x, w), relax.const(bias)))
            t = bb.emit(relax.op.right_shift(t, relax.const(9, "int32")))
            t = bb.emit(relax.op.minimum(bb.emit(relax.op.maximum(t, relax.const(-128, "int32"))),
                                         relax.const(127, "int32")))
            return bb.emit(relax.op.astype(t, "int8"))
        a, b = branch(W1, BIAS), branch(W3, -BIAS)
        s = bb.emit(relax.op.add(bb.emit(relax.op.astype(a, "int32")), bb.emit(relax.op.astype(b, "int32"))))
        s = bb.emit(relax.op.minimum(bb.emit(relax.op.maximum(s, relax.const(0, "int32"))),
                                     relax.const(255, "int32")))
        return bb.emit(relax.op.astype(s, "uint8"))
    return relax_main(X, "uint8", body)


def test_residual_add_runs_in_the_second_conv():
    """The add and its requantize are fused into one conv's kernel, which reads the other conv's int8 output;
    the integers equal those of TVM's pipeline without our passes."""
    from tvm_fxp.schedules import legalize
    from tvm_fxp.schedules.fuse import FuseEpilogue

    with tvm.target.Target(HOST):
        fused = FuseEpilogue()(BlockLayout()(before_residual()))
    calls = [b.value for b in fused["main"].body.blocks[0].bindings if isinstance(b.value, relax.Call)
             and b.value.op.same_as(tvm.ir.Op.get("relax.call_tir"))]
    kernels = [fused[c.args[0]].attrs[legalize.KERNEL_ATTR] for c in calls]
    assert len(calls) == 2 and all("epilogue" in k for k in kernels), kernels
    assert calls[1].args[1][-1].same_as(fused["main"].body.blocks[0].bindings[0].var)   # reads the first's int8
    x = np.random.default_rng(6).integers(0, 256, (1, 16, 8, 8), dtype=np.uint8)
    outs = [relax.VirtualMachine(cpu_pipeline.build(before_residual(), HOST, fuse=fuse), tvm.cpu())["main"](
        tvm.runtime.tensor(x)).numpy() for fuse in (False, True)]
    np.testing.assert_array_equal(outs[0], outs[1])
    assert len(np.unique(outs[1])) > 8
