"""NEON tensor intrinsics (desc/impl pairs, as ``tvm.s_tir.tensor_intrin.arm_cpu``) for the int32 baseline.

``AccumTwoWithin16Bits`` (ruy's name for the assumption, ``ruy/kernel_arm64.cc``; gemmlowp's
``doc/kernel.md``): the best int32-accumulating int8 kernel on ARMv8.0 without ``sdot`` multiplies 16 depth
values of one row by 16 of one column with ``smull .8h`` (depth 0..7) + ``smlal2 .8h`` (depth 8..15), so each
16-bit lane holds the sum of TWO products, then widens pairs of lanes into the int32 accumulator with
``sadalp .4s``.  Two products of int8 values fit int16 unless both are ``(-128) * (-128)``: the kernel is exact
when one operand avoids -128 (ruy requires the weights in [-127, 127]; ``kernel_operands_ok`` checks it).

Desc (``PAIRED_DESC``): 16 depth values ``A[0:16]``, ``B[0:16]`` into four int32 lanes, lane ``i`` taking depth
``{2i, 2i+1, 8+2i, 9+2i}`` -- exactly the lanes ``smull``/``smlal2``/``sadalp`` produce, so a kernel that
tensorizes with it sums each output over its 4 lanes at the end (``addp``/``addv``).
"""

from __future__ import annotations

from tvm.s_tir import TensorIntrin
from tvm.script import tirx as T

PAIRED_INT32 = "tvm_fxp.neon_paired_16x4_i8i8i32"
DEPTH = 16          # depth values per intrinsic call
ACC_LANES = 4       # int32 lanes of one accumulator register


@T.prim_func(s_tir=True)
def paired_desc(a: T.handle, b: T.handle, c: T.handle) -> None:
    A = T.match_buffer(a, (16,), "int8", offset_factor=1)
    B = T.match_buffer(b, (16,), "int8", offset_factor=1)
    C = T.match_buffer(c, (4,), "int32", offset_factor=1, scope="local")
    with T.sblock("root"):
        T.reads(C[0:4], A[0:16], B[0:16])
        T.writes(C[0:4])
        for i, h, e in T.grid(4, 2, 2):
            with T.sblock("update"):
                vi, vh, ve = T.axis.remap("SRR", [i, h, e])
                C[vi] = C[vi] + T.cast(A[vh * 8 + vi * 2 + ve], "int32") * T.cast(B[vh * 8 + vi * 2 + ve], "int32")


@T.prim_func(s_tir=True)
def paired_impl(a: T.handle, b: T.handle, c: T.handle) -> None:
    A = T.match_buffer(a, (16,), "int8", offset_factor=1)
    B = T.match_buffer(b, (16,), "int8", offset_factor=1)
    C = T.match_buffer(c, (4,), "int32", offset_factor=1, scope="local")
    with T.sblock("root"):
        T.reads(C[0:4], A[0:16], B[0:16])
        T.writes(C[0:4])
        va = A.vload([0], "int8x16")
        vb = B.vload([0], "int8x16")
        # smull .8h (low halves) + smull .8h (high halves) added in 16 bits: LLVM selects smull + smlal2
        pair = T.call_llvm_pure_intrin(
            T.llvm_lookup_intrinsic_id("llvm.aarch64.neon.smull.v8i16"),
            T.vectorlow(va, dtype="int8x8"), T.vectorlow(vb, dtype="int8x8"), dtype="int16x8") + \
            T.call_llvm_pure_intrin(
                T.llvm_lookup_intrinsic_id("llvm.aarch64.neon.smull.v8i16"),
                T.vectorhigh(va, dtype="int8x8"), T.vectorhigh(vb, dtype="int8x8"), dtype="int16x8")
        # acc + saddlp(pair): LLVM selects sadalp .4s
        C[T.ramp(T.int32(0), 1, 4)] = C.vload([0], "int32x4") + T.call_llvm_pure_intrin(
            T.llvm_lookup_intrinsic_id("llvm.aarch64.neon.saddlp.v4i32.v8i16"), pair, dtype="int32x4")


try:
    TensorIntrin.register(PAIRED_INT32, paired_desc, paired_impl)
except Exception:  # noqa: BLE001 -- already registered (module reloaded)
    pass


HSUM_4x4 = "tvm_fxp.neon_hsum_4x4_i32"


@T.prim_func(s_tir=True)
def hsum_desc(a: T.handle, o: T.handle) -> None:
    A = T.match_buffer(a, (4, 4), "int32", offset_factor=1, scope="local")
    O = T.match_buffer(o, (4,), "int32", offset_factor=1)
    with T.sblock("root"):
        T.reads(O[0:4], A[0:4, 0:4])
        T.writes(O[0:4])
        for i, k in T.grid(4, 4):
            with T.sblock("hsum"):
                vi, vk = T.axis.remap("SR", [i, k])
                O[vi] = O[vi] + A[vi, vk]


@T.prim_func(s_tir=True)
def hsum_impl(a: T.handle, o: T.handle) -> None:
    A = T.match_buffer(a, (4, 4), "int32", offset_factor=1, scope="local")
    O = T.match_buffer(o, (4,), "int32", offset_factor=1)
    with T.sblock("root"):
        T.reads(O[0:4], A[0:4, 0:4])
        T.writes(O[0:4])
        # the four lanes of four accumulators -> one vector of four sums: addp, addp, addp (ruy's write-back)
        O[T.ramp(T.int32(0), 1, 4)] = O.vload([0], "int32x4") + T.call_llvm_pure_intrin(
            T.llvm_lookup_intrinsic_id("llvm.aarch64.neon.addp.v4i32"),
            T.call_llvm_pure_intrin(T.llvm_lookup_intrinsic_id("llvm.aarch64.neon.addp.v4i32"),
                                    A.vload([0, 0], "int32x4"), A.vload([1, 0], "int32x4"), dtype="int32x4"),
            T.call_llvm_pure_intrin(T.llvm_lookup_intrinsic_id("llvm.aarch64.neon.addp.v4i32"),
                                    A.vload([2, 0], "int32x4"), A.vload([3, 0], "int32x4"), dtype="int32x4"),
            dtype="int32x4")


try:
    TensorIntrin.register(HSUM_4x4, hsum_desc, hsum_impl)
except Exception:  # noqa: BLE001 -- already registered (module reloaded)
    pass
