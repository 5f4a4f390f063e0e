"""tools/asm.py: finding the hot loop and counting its multiply lanes in aarch64 assembly."""

import pytest

from tools.asm import hot_loop, llvm_mca, loops, mul_lanes

from . import arm_tools

ASM = """
f:
\tmov\tx0, #0
.LBB0_1:                                // outer loop
\tmovi\tv0.2d, #0000000000000000
.LBB0_2:                                // inner loop: 2 x 8 + 4 lanes
\tld1r\t{ v1.16b }, [x1], #1
\tsmlal\tv0.8h, v1.8b, v2.8b
\tsmlal2\tv3.8h, v1.16b, v2.16b
\tsmlal\tv4.4s, v5.4h, v6.4h
\tsubs\tx2, x2, #1
\tb.ne\t.LBB0_2
\tadd\tx0, x0, #1
\tcmp\tx0, #4
\tb.ne\t.LBB0_1
.LBB0_3:                                // a second, lighter loop
\tmul\tv7.8h, v7.8h, v8.8h
\tcbnz\tx3, .LBB0_3
\tret
"""


def test_mul_lanes():
    assert mul_lanes("smlal2\tv3.8h, v1.16b, v2.16b") == 8
    assert mul_lanes("smull\tv3.4s, v1.4h, v2.4h") == 4
    assert mul_lanes("saddw\tv3.4s, v3.4s, v1.4h") == 0
    assert mul_lanes("add\tx0, x0, #1") == 0


def test_innermost_loops_and_hot_loop():
    found = {lp.label: lp for lp in loops(ASM)}
    assert set(found) == {".LBB0_2", ".LBB0_3"}          # .LBB0_1 contains .LBB0_2: not innermost
    hot = hot_loop(ASM)
    assert hot.label == ".LBB0_2" and hot.mul_lanes == 20
    assert hot.mnemonics == {"ld1r": 1, "smlal": 2, "smlal2": 1, "subs": 1, "b.ne": 1}
    with pytest.raises(ValueError):
        hot_loop("f:\n\tret\n")


def test_llvm_mca_counts_the_multiply_pipe():
    """8 independent smlal per iteration: F0 (A57UnitW in LLVM's A72 model) takes 1 cycle each."""
    arm_tools.require_mca()
    body = "".join(f"smlal\tv{i}.8h, v20.8b, v21.8b\n" for i in range(8))
    res = llvm_mca(body)
    assert res.cycles_per_iteration == pytest.approx(8.0, rel=0.05)
    assert res.resource_pressure.get("A57UnitW") == pytest.approx(8.0, rel=0.01)
