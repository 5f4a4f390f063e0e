"""matmul kernels (schedules/dense_int.py) bit-exact against the int64 numpy desc on the host CPU."""

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tvm_fxp.schedules import dense_primfuncs, host, kernel_config, plan_dense, preset

from .reference import INT16_LIMIT, dense_l1_bound, dense_ref, random_operands, run_kernel

HOST = host()
CONFIG_TARGETS = {"host": HOST, "rpi4": preset("rpi4")}


@st.composite
def dense_cases(draw):
    return dict(m=draw(st.integers(1, 5)), k=draw(st.integers(1, 300)),
                n=draw(st.one_of(st.integers(1, 40), st.integers(1, 140))),
                dtype=draw(st.sampled_from(["int8", "uint8"])), acc=draw(st.sampled_from(["int16", "int32"])),
                config=draw(st.sampled_from(sorted(CONFIG_TARGETS))), seed=draw(st.integers(0, 2**31)))


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(dense_cases())
def test_dense_matches_reference(case):
    rng = np.random.default_rng(case["seed"])
    a, b = random_operands(rng, (case["m"], case["k"]), (case["k"], case["n"]), case["dtype"], case["acc"],
                           case["k"])
    if case["acc"] == "int16":
        assert dense_l1_bound(np.abs(a.astype(np.int64)).max(), b) < INT16_LIMIT
    plan = plan_dense(a.shape, b.shape, case["dtype"], case["acc"],
                      config=kernel_config(CONFIG_TARGETS[case["config"]], case["acc"]))
    got = run_kernel(dense_primfuncs(plan), plan, a, b, (case["m"], case["n"]), HOST, case["n"])
    assert got.dtype == np.dtype(case["acc"])
    np.testing.assert_array_equal(got.astype(np.int64), dense_ref(a, b), err_msg=str(plan))


def test_dense_block_divides_vectors():
    cfg = kernel_config(preset("rpi4"), "int16")
    plan = plan_dense((1, 1568), (1568, 128), "uint8", "int16", config=cfg)
    assert (plan.lanes, plan.block, plan.vector_blocks) == (16, 8, 8)
    small = plan_dense((1, 128), (128, 10), "int8", "int16", config=cfg)    # dot-product layout
    assert (small.lanes, small.split, small.block, small.packed_weight_shape) == (1, 16, 10, (10, 128, 1))
