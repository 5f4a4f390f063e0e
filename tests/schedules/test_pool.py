"""Integer NCHW max pooling (schedules/pool.py) exact against a numpy reference, dispatched by the
legalization on x86 (padding, strides, ceil_mode, int8/uint8/int16); float pools keep TVM's kernel."""

import numpy as np
import pytest
import tvm
from tvm import relax

import tvm_fxp
from tvm_fxp.schedules import host, kernel_config
from tvm_fxp.schedules.legalize import dispatched_kernels

from .reference import relax_main

HOST = host()
X86 = kernel_config(HOST, "int32").arch.startswith("x86")


def max_pool_ref(x, k, s, p, oh, ow):
    """Windows over ``x`` padded with the dtype's minimum (ceil_mode: past the edge too), int64."""
    lo = np.iinfo(x.dtype).min
    n, c, h, w = x.shape
    xp = np.full((n, c, max(h + 2 * p, (oh - 1) * s + k), max(w + 2 * p, (ow - 1) * s + k)), lo, np.int64)
    xp[:, :, p:p + h, p:p + w] = x
    out = np.full((n, c, oh, ow), lo, np.int64)
    for ky in range(k):
        for kx in range(k):
            out = np.maximum(out, xp[:, :, ky:ky + s * (oh - 1) + 1:s, kx:kx + s * (ow - 1) + 1:s])
    return out


def _pool_module(shape, dtype, k, s, p, ceil):
    return relax_main(shape, dtype, lambda bb, x: relax.op.nn.max_pool2d(x, k, s, p, ceil_mode=ceil))


@pytest.mark.skipif(not X86, reason="x86 kernels")
@pytest.mark.parametrize("shape, k, s, p, ceil, dtype", [
    ((2, 5, 13, 70), 3, 2, 1, False, "uint8"),     # ResNet's stem pool; 35 columns: overlapping chunks
    ((1, 4, 15, 15), 3, 2, 0, True, "int8"),       # SqueezeNet's (ceil_mode)
    ((1, 2, 9, 9), 2, 2, 0, True, "int16"),        # ceil_mode adds a window past the edge
    ((1, 3, 10, 21), 3, 1, 1, False, "int8"),      # stride 1
])
def test_max_pool_matches_reference(shape, k, s, p, ceil, dtype):
    rng = np.random.default_rng(2)
    info = np.iinfo(dtype)
    x = rng.integers(info.min, info.max + 1, shape).astype(dtype)
    x.flat[rng.integers(0, x.size, x.size // 8)] = info.min      # windows of minima next to the padding
    mod = _pool_module(shape, dtype, k, s, p, ceil)
    assert dispatched_kernels(mod, HOST) == {f"max_pool2d_{dtype}": 1}
    got = relax.VirtualMachine(tvm_fxp.build(mod), tvm.cpu())["main"](tvm.runtime.tensor(x)).numpy()
    assert got.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(got.astype(np.int64), max_pool_ref(x, k, s, p, *got.shape[2:]))


def test_float_pool_keeps_tvms_kernel():
    assert dispatched_kernels(_pool_module((1, 2, 8, 8), "float32", 2, 2, 0, False), HOST) == {}
