"""``SinkIntoConcat`` (schedules/concat.py): Before/Expected structure, and the built module's exact integers
against TVM's pipeline without our passes."""

import numpy as np
import tvm
from tvm import relax

from tvm_fxp.schedules import cpu_pipeline, host
from tvm_fxp.schedules.concat import SinkIntoConcat

from .reference import relax_main

HOST = host()
RNG = np.random.default_rng(11)
W1 = RNG.integers(-128, 128, (8, 16, 1, 1), dtype=np.int8)
W2 = RNG.integers(-128, 128, (24, 16, 3, 3), dtype=np.int8)
SHIFT = RNG.integers(7, 11, (1, 32, 1, 1), dtype=np.int32)      # per-channel: cut at the concat's seams


def _tail(bb, t, shift):
    """Realize's requantize: rounding right shift (a DAG: t feeds both less and add), saturate, astype."""
    neg = bb.emit(relax.op.astype(bb.emit(relax.op.less(t, relax.const(0, "int32"))), "int32"))
    half = bb.emit(relax.op.add(t, relax.const(64, "int32")))
    t = bb.emit(relax.op.right_shift(bb.emit(relax.op.subtract(half, neg)), shift))
    t = bb.emit(relax.op.minimum(bb.emit(relax.op.maximum(t, relax.const(0, "int32"))), relax.const(255, "int32")))
    return bb.emit(relax.op.astype(t, "uint8"))


def _convs(bb, x):
    a = bb.emit(relax.op.nn.conv2d(x, relax.const(W1), out_dtype="int32"))
    b = bb.emit(relax.op.nn.conv2d(x, relax.const(W2), padding=1, out_dtype="int32"))
    return a, b


def before():
    def body(bb, x):
        a, b = _convs(bb, x)
        return _tail(bb, bb.emit(relax.op.concat([a, b], axis=1)), relax.const(SHIFT))
    return relax_main((1, 16, 6, 6), "uint8", body)


def expected():
    def body(bb, x):
        a, b = _convs(bb, x)
        parts = [_tail(bb, a, relax.const(np.ascontiguousarray(SHIFT[:, :8]))),
                 _tail(bb, b, relax.const(np.ascontiguousarray(SHIFT[:, 8:])))]
        return bb.emit(relax.op.concat(parts, axis=1))
    return relax_main((1, 16, 6, 6), "uint8", body)


def test_sink_into_concat_rewrites():
    after = SinkIntoConcat()(before())
    after = relax.transform.CanonicalizeBindings()(after)       # the output alias the rewrite leaves
    tvm.ir.assert_structural_equal(after, relax.transform.CanonicalizeBindings()(expected()))


def test_sunk_build_is_bit_exact():
    x = np.random.default_rng(2).integers(0, 256, (1, 16, 6, 6), dtype=np.uint8)
    outs = []
    for fuse in (False, True):
        vm = relax.VirtualMachine(cpu_pipeline.build(before(), HOST, fuse=fuse), tvm.cpu())
        outs.append(vm["main"](tvm.runtime.tensor(x)).numpy())
    np.testing.assert_array_equal(outs[0], outs[1])
    assert len(np.unique(outs[1])) > 8       # not saturated to a constant
