"""Cross-compiled aarch64 (Cortex-A72) code of the kernels: the instructions in the hot loop.

No board and no emulator: LLVM's aarch64 backend is part of TVM.  The int16 kernels must multiply-accumulate
with ``smlal``/``smlal2`` into ``.8h`` lanes (8 MACs per instruction); the int32 kernels must not, and
accumulate into ``.4s``.  With ``llvm-mca-19`` (``.ci/setup_arm.sh``) the loops are also timed statically.
"""

import re

import numpy as np
import pytest
import tvm
from tvm import relax

from tvm_fxp.schedules import conv2d_primfuncs, dense_primfuncs, plan_conv2d, plan_dense, preset, register
from tvm_fxp.schedules import paired_int32 as paired
from tools.asm import hot_loop, llvm_mca

from . import arm_tools
from .reference import relax_main

RPI4 = preset("rpi4")

KERNELS = {   # name -> plan factory(acc_dtype)
    "conv3x3_int8": lambda acc: plan_conv2d((1, 32, 14, 14), (32, 32, 3, 3), "int8", acc, padding=(1, 1, 1, 1),
                                            target=RPI4),
    "conv3x3_uint8": lambda acc: plan_conv2d((1, 16, 28, 28), (16, 16, 3, 3), "uint8", acc,
                                             padding=(1, 1, 1, 1), target=RPI4),
    "conv1x1_s2_int8": lambda acc: plan_conv2d((1, 32, 14, 14), (64, 32, 1, 1), "int8", acc, strides=(2, 2),
                                               target=RPI4),
    "depthwise3x3_uint8": lambda acc: plan_conv2d((1, 32, 14, 14), (32, 1, 3, 3), "uint8", acc, groups=32,
                                                  padding=(1, 1, 1, 1), target=RPI4),
    "dense_uint8": lambda acc: plan_dense((1, 1568), (1568, 128), "uint8", acc, target=RPI4),
}


def kernel_asm(name: str, acc: str) -> tuple:
    plan = KERNELS[name](acc)
    funcs = conv2d_primfuncs(plan) if name.startswith(("conv", "depthwise")) else dense_primfuncs(plan)
    return plan, tvm.tirx.build(funcs[2], target=RPI4).inspect_source("asm")


def accumulators(loop, arrangement: str) -> set:
    """Destination registers of multiply-accumulates into ``arrangement`` lanes (e.g. ``8h``)."""
    regs = set()
    for insn in loop.lines:
        m = re.match(rf"(smlal2?|umlal2?|mla)\s+(v\d+)\.{arrangement},", insn)
        if m:
            regs.add(m.group(2))
    return regs


@pytest.mark.parametrize("name", sorted(KERNELS))
def test_int16_kernel_uses_smlal_on_8h(name):
    plan, asm = kernel_asm(name, "int16")
    loop = hot_loop(asm)
    smlal_8h = [i for i in loop.lines if re.match(r"smlal2?\s+v\d+\.8h,", i)]
    assert smlal_8h, f"no smlal into .8h in the hot loop:\n{loop.text}"
    assert all(re.match(r"smlal2?\s+v\d+\.8h,", i) for i in loop.lines if i.split()[0] in
               ("smlal", "smlal2", "mla", "mul", "umlal", "umlal2", "smull", "smull2")
               and not i.split()[0].startswith("smull")), loop.text
    # register blocking: R >= 4 positions x 16 channels (two .8h registers each) stay in registers
    assert plan.block >= 4 and plan.lanes == 16
    assert len(accumulators(loop, "8h")) >= 2 * plan.block, loop.text
    assert loop.mul_lanes % (plan.block * plan.lanes) == 0, loop.mnemonics


@pytest.mark.parametrize("name", sorted(KERNELS))
def test_int32_kernel_accumulates_in_4s(name):
    loop = hot_loop(kernel_asm(name, "int32")[1])
    assert not any(re.match(r"smlal2?\s+v\d+\.8h,", i) for i in loop.lines), loop.text
    wide = [i for i in loop.lines if re.match(r"(saddw2?|smlal2?|sadalp|add)\s+v\d+\.4s,", i)]
    assert wide, f"no accumulation into .4s lanes:\n{loop.text}"


def test_relax_module_cross_compiles_to_smlal():
    """tvm.compile of a Relax conv2d with out_dtype=int16 for the Pi dispatches to the int16 kernel."""
    w = np.random.default_rng(0).integers(-8, 8, (32, 16, 3, 3)).astype("int8")
    mod = relax_main((tvm.tirx.Var("n", "int64"), 16, 12, 12), "uint8",
                     lambda bb, x: bb.emit(relax.op.nn.conv2d(x, relax.const(w), padding=[1, 1], out_dtype="int16")))
    register()                      # tvm.compile's default pipeline then uses our kernels
    ex = tvm.compile(mod, target=RPI4)
    lib = ex.mod.imports[0]
    assert lib.implements_function("fxp_conv2d_uint8_int16_channels")
    assert not lib.implements_function("fxp_conv2d_weight_pack")     # packed at compile time
    loop = hot_loop(lib.inspect_source("asm"))
    assert any(re.match(r"smlal2?\s+v\d+\.8h,", i) for i in loop.lines), loop.text


PAIRED = {   # the same layers for the gemmlowp/ruy paired-int32 baseline (schedules/paired_int32.py)
    "conv3x3_int8": lambda: paired.plan_paired_conv2d((1, 32, 14, 14), (32, 32, 3, 3), "int8", padding=(1, 1, 1, 1)),
    "conv3x3_uint8": lambda: paired.plan_paired_conv2d((1, 16, 28, 28), (16, 16, 3, 3), "uint8", padding=(1, 1, 1, 1)),
    "dense_uint8": lambda: paired.plan_paired_dense((1, 1568), (1568, 128), "uint8"),
}


@pytest.mark.parametrize("name", sorted(PAIRED))
def test_llvm_mca_inner_loops_against_the_best_int32(name):
    """Cortex-A72 model, inner loops: the int16 loop and the paired-int32 (smull/smlal2/sadalp) loop both run
    near the one-multiply-pipe peak of 8 MACs/cycle, so narrow accumulators are NOT a 2x win over the best
    int32 kernel there (ARM.md); our own widening int32 variant (smlal .4s) is the weak one, near 4."""
    arm_tools.require_mca()
    rate = {}
    for acc in ("int16", "int32"):
        loop = hot_loop(kernel_asm(name, acc)[1])
        rate[acc] = loop.mul_lanes / llvm_mca(loop.text).cycles_per_iteration
    loop = hot_loop(tvm.tirx.build(paired.paired_primfuncs(PAIRED[name]())[2], target=RPI4).inspect_source("asm"))
    rate["paired_int32"] = loop.mul_lanes / llvm_mca(loop.text).cycles_per_iteration
    assert rate["int16"] >= 0.95 * 8 and rate["paired_int32"] >= 0.85 * 8, rate     # paired: short depth loops
    assert rate["int32"] <= 0.6 * 8, rate
