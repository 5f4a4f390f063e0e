"""Target presets (as data) and the per-target knobs of the integer kernels.

A preset is the plain dict ``tvm.target.Target`` takes (TVM 0.27 refuses the string form with flags).
``kernel_config(target, acc_dtype)`` turns a target into the two numbers the schedules need: how many
output channels one vector holds (``lanes``) and how many output positions are register-blocked
(``max_block``).  Both follow from the register file:

- aarch64 NEON: 32 registers of 16 bytes.  int8 weights for 16 channels fill one register, which
  ``smlal``/``smlal2`` read as two halves; 16 int16 accumulators are 2 registers per position, so 8
  positions take 16 registers and leave the rest for weights and broadcast inputs.  int32 accumulators
  take 4 registers per position, so 4 positions.
- x86 AVX-512 (32 zmm of 64 bytes): 32 int16 lanes or 16 int32 lanes per register, one register per
  position; AVX2 (16 ymm of 32 bytes) has half the lanes and half the registers.
"""

from __future__ import annotations

from dataclasses import dataclass

import tvm
from tvm.target import codegen

RPI4 = {"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mcpu": "cortex-a72", "mattr": ["+neon"]}
"""Raspberry Pi 4: Cortex-A72, ARMv8.0-A with NEON (no ``sdot``)."""

RPI3 = {"kind": "llvm", "mtriple": "armv7l-linux-gnueabihf", "mcpu": "cortex-a53", "mattr": ["+neon"],
        "mfloat-abi": "hard"}
"""Raspberry Pi 3 (and Pi 2 v1.2/Zero 2) under the 32-bit Raspberry Pi OS: Cortex-A53 in AArch32 with NEON,
hard-float ABI (``arm-linux-gnueabihf``; without ``mfloat-abi`` the objects do not link with its libraries)."""

PRESETS = {"rpi4": RPI4, "rpi3": RPI3}


def host() -> tvm.target.Target:
    """LLVM for this machine's CPU (same as ``tvm_fxp.api.host_target``)."""
    return tvm.target.Target({"kind": "llvm", "mcpu": codegen.llvm_get_system_cpu()})


def preset(name: str) -> tvm.target.Target:
    """``"host"`` or a name in ``PRESETS`` -> Target."""
    if name == "host":
        return host()
    if name not in PRESETS:
        raise ValueError(f"unknown target preset {name!r}; known: host, {', '.join(PRESETS)}")
    return tvm.target.Target(PRESETS[name])


def is_aarch64(target: tvm.target.Target) -> bool:
    triple = str(target.attrs.get("mtriple", "") or "")
    if triple:
        return triple.startswith(("aarch64", "arm64"))
    return codegen.llvm_get_system_triple().startswith(("aarch64", "arm64"))


def _has(target: tvm.target.Target, feature: str) -> bool:
    try:
        return bool(codegen.llvm_cpu_has_features([feature], target))
    except Exception:  # noqa: BLE001 -- unknown feature name for this triple
        return False


@dataclass(frozen=True)
class KernelConfig:
    """Vector shape of an integer kernel on one target.

    ``lanes``: output channels (or groups, or dense outputs) per vector statement; ``max_block``: how many
    output positions share one loaded weight vector (register blocking).
    """

    lanes: int
    max_block: int
    acc_dtype: str
    arch: str
    vnni: bool = False       # AVX-512 VNNI (vpdpbusd): conv2d layout "vnni" (conv2d_vnni.py)
    vbmi: bool = False       # AVX-512 VBMI (vpermb) as well: depthwise layout "depthwise_vnni" (conv2d_depthwise.py)

    def block_limit(self, lanes: int) -> int:
        """``max_block`` for a narrower vector of ``lanes`` (fewer registers per position), at most 16."""
        return min(16, self.max_block * max(1, self.lanes // lanes))


def kernel_config(target: tvm.target.Target, acc_dtype: str) -> KernelConfig:
    """The lanes and register block for ``acc_dtype`` accumulators on ``target``: ``int16``/``int32``, or
    ``float64`` for the simulation's exact float kernels (``conv2d_int.exact_float``)."""
    if acc_dtype not in ("int16", "int32", "float64"):
        raise ValueError(f"acc_dtype must be int16, int32 or float64, got {acc_dtype!r}")
    acc_bytes = {"int16": 2, "int32": 4, "float64": 8}[acc_dtype]
    if is_aarch64(target):
        vec_bytes, n_regs, arch = 16, 32, "aarch64"
        lanes = 16 if acc_bytes < 8 else 2          # one q register of int8 weights (float64: of weights)
    elif _has(target, "avx512bw"):
        vec_bytes, n_regs, arch = 64, 32, "x86-avx512"
        lanes = vec_bytes // acc_bytes              # one zmm accumulator per position
    elif _has(target, "avx2"):
        vec_bytes, n_regs, arch = 32, 16, "x86-avx2"
        lanes = vec_bytes // acc_bytes
    else:
        vec_bytes, n_regs, arch = 16, 16, "generic"
        lanes = vec_bytes // acc_bytes
    regs_per_position = max(1, lanes * acc_bytes // vec_bytes)
    max_block = max(1, (n_regs // 2) // regs_per_position)
    vnni = arch == "x86-avx512" and acc_bytes < 8 and _has(target, "avx512vnni")
    vbmi = vnni and _has(target, "avx512vbmi")
    return KernelConfig(lanes=lanes, max_block=max_block, acc_dtype=acc_dtype, arch=arch, vnni=vnni, vbmi=vbmi)
