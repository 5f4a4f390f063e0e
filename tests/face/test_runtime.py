"""The runtime's calls: staged aligned inputs and outputs shared through DLPack must never alias across calls."""

import numpy as np
import tvm
from tvm import relax
from tvm.script import relax as R

from tvm_fxp.runtime import ALIGNMENT, Runner, Staging, aligned_empty, to_numpy


@tvm.script.ir_module
class Affine:
    @R.function
    def main(x: R.Tensor((2, 3), "float32")) -> R.Tensor((2, 3), "float32"):
        with R.dataflow():
            y = R.add(R.multiply(x, R.const(2.0, "float32")), R.const(1.0, "float32"))
            R.output(y)
        return y


def test_staging_reuses_one_aligned_buffer_and_copies_every_call():
    stage = Staging()
    base = np.arange(20, dtype=np.float32)
    a, b = base[1:7].reshape(2, 3), base[7:13].reshape(2, 3)     # misaligned views
    ta = stage(a)
    assert np.array_equal(ta.numpy(), a)
    tb = stage(b)
    assert np.array_equal(tb.numpy(), b)                         # the same buffer, refilled
    assert np.array_equal(ta.numpy(), b)
    ro = np.ones((2, 3), np.float32)
    ro.flags.writeable = False
    assert np.array_equal(stage(ro).numpy(), ro)
    assert np.array_equal(stage(np.array([True, False]), 1).numpy(), [True, False])
    buf = aligned_empty((5, 7), np.int16)
    assert buf.ctypes.data % ALIGNMENT == 0 and buf.shape == (5, 7) and buf.flags.c_contiguous


def test_runner_outputs_survive_the_next_call():
    ex = relax.build(Affine, "llvm")
    runner = Runner(ex)
    x1 = np.arange(6, dtype=np.float32).reshape(2, 3)
    x2 = -x1
    y1 = runner.run(x1, batch_size=2)
    y2 = runner.run(x2, batch_size=2)
    assert np.array_equal(y1, 2 * x1 + 1) and np.array_equal(y2, 2 * x2 + 1)
    vm = relax.VirtualMachine(ex, tvm.cpu())
    stage = Staging()
    first = to_numpy(vm["main"](stage(x1)))
    second = to_numpy(vm["main"](stage(x2)))
    assert np.array_equal(first, 2 * x1 + 1) and np.array_equal(second, 2 * x2 + 1)
