"""AVX2 conv2d kernels (schedules/conv2d_avx2.py) built for ``mcpu=haswell`` (AVX2, no VNNI), run on this host.

``avx2_acc16``: ``vpmaddubsw`` pair sums added in int16 -- exact because the operands satisfy the L1 bound
Realize proves before it chooses int16 (so no pair sum saturates and no running sum wraps).  ``avx2_madd``: the
int32 path it is compared with (``vpmaddubsw`` + ``vpmaddwd`` + ``vpaddd``), exact on the same operands.
"""

import numpy as np
import pytest
import tvm
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tvm_fxp.schedules import conv2d_primfuncs, dispatched_kernels, plan_conv2d
from tools.asm import loops
from tvm_fxp.schedules.conv2d_avx2 import prefer_madd
from tvm_fxp.schedules.targets import _has, host

from .reference import INT16_LIMIT, conv2d_l1_bound, conv2d_ref, quantized_vgg, random_operands, run_host, \
    run_kernel

HASWELL = tvm.target.Target({"kind": "llvm", "mcpu": "haswell"})
pytestmark = pytest.mark.skipif(not _has(host(), "avx2"), reason="this host has no AVX2 to run haswell code")


@given(c=st.integers(2, 40), oc=st.integers(1, 20), k=st.sampled_from([1, 3]), s=st.integers(1, 2),
       pad=st.integers(0, 1), hw=st.integers(3, 9), layout=st.sampled_from(["avx2_acc16", "avx2_madd"]),
       seed=st.integers(0, 2**31))
@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_avx2_kernels_bit_exact(c, oc, k, s, pad, hw, layout, seed):
    rng = np.random.default_rng(seed)
    x, w = random_operands(rng, (1, c, hw, hw), (oc, c, k, k), "uint8", "int16", c * k * k)
    assert conv2d_l1_bound(int(x.max()), w) < INT16_LIMIT          # what Realize proves for int16
    acc = "int16" if layout == "avx2_acc16" else "int32"
    plan = plan_conv2d(x.shape, w.shape, "uint8", acc, strides=(s, s), padding=(pad,) * 4, target=HASWELL,
                       layout=layout)
    expected = conv2d_ref(x, w, (s, s), (pad,) * 4)
    got = run_kernel(conv2d_primfuncs(plan), plan, x, w, expected.shape, HASWELL, oc)
    assert got.dtype == np.dtype(acc)
    np.testing.assert_array_equal(got.astype(np.int64), expected)


def test_acc16_inner_loop_saves_the_widening():
    """acc16: vpbroadcastd + vpmaddubsw + vpaddw per 32 MACs; madd adds a vpmaddwd per step."""
    hot = {}
    for acc, layout in (("int16", "avx2_acc16"), ("int32", "avx2_madd")):
        plan = plan_conv2d((1, 16, 14, 14), (32, 16, 3, 3), "uint8", acc, padding=(1,) * 4, target=HASWELL,
                           layout=layout)
        asm = tvm.tirx.build(conv2d_primfuncs(plan, batch=1)[2], target=HASWELL).inspect_source("asm")
        hot[acc] = max(loops(asm), key=lambda lp: lp.mnemonics.get("vpmaddubsw", 0)).mnemonics
    assert hot["int16"]["vpmaddubsw"] == hot["int16"]["vpaddw"] > 0 and "vpmaddwd" not in hot["int16"]
    assert hot["int32"]["vpmaddubsw"] == hot["int32"]["vpmaddwd"] == hot["int32"]["vpaddd"] > 0


def test_haswell_build_of_a_proven_model_is_bit_exact():
    """A 4-bit vgg realized with the proven (int16) accumulators and built for haswell dispatches the acc16
    kernels (fused epilogues) and gives exactly the host simulation; int32 + prefer_madd likewise."""
    import tvm_fxp
    from tvm_fxp.datasets import fashion_mnist

    q = quantized_vgg(4)
    x = fashion_mnist("test", limit=16).inputs
    expected = run_host(q.simulated(), x)
    narrow = q.realized()
    assert any("avx2_acc16" in k for k in dispatched_kernels(narrow, HASWELL))
    np.testing.assert_array_equal(tvm_fxp.Runner(tvm_fxp.build(narrow, HASWELL)).run(x), expected)
    with prefer_madd():
        wide = q.realized("wide")
        assert any("avx2_madd" in k for k in dispatched_kernels(wide, HASWELL))
        np.testing.assert_array_equal(tvm_fxp.Runner(tvm_fxp.build(wide, HASWELL)).run(x), expected)
