"""int64 numpy references (the kernels' descs), accumulator bounds, kernel runners and Relax module builders
shared by the tests."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import tvm

HERE = Path(__file__).resolve().parent
MODELS = HERE.parents[1] / "examples" / "models"

INT16_LIMIT = 1 << 15


def conv2d_ref(x, w, strides=(1, 1), padding=(0, 0, 0, 0), dilation=(1, 1), groups=1) -> np.ndarray:
    """NCHW x OIHW grouped conv2d in int64 (float64 for float operands); ``padding`` is (t, l, b, r)."""
    wide = np.float64 if np.issubdtype(x.dtype, np.floating) else np.int64
    n, c, h, wd = x.shape
    oc, icg, kh, kw = w.shape
    (sh, sw), (dh, dw) = strides, dilation
    pt, pl, pb, pr = padding
    xp = np.pad(x.astype(wide), ((0, 0), (0, 0), (pt, pb), (pl, pr)))
    oh = (h + pt + pb - dh * (kh - 1) - 1) // sh + 1
    ow = (wd + pl + pr - dw * (kw - 1) - 1) // sw + 1
    out = np.zeros((n, oc, oh, ow), wide)
    ocg = oc // groups
    w64 = w.astype(wide)
    for g in range(groups):
        xs = xp[:, g * icg:(g + 1) * icg]
        for ky in range(kh):
            for kx in range(kw):
                patch = xs[:, :, ky * dh: ky * dh + sh * (oh - 1) + 1: sh, kx * dw: kx * dw + sw * (ow - 1) + 1: sw]
                out[:, g * ocg:(g + 1) * ocg] += np.einsum("nchw,oc->nohw", patch, w64[g * ocg:(g + 1) * ocg, :, ky, kx])
    return out


def conv2d_l1_bound(x_max_abs: int, w: np.ndarray) -> int:
    """``max|x| * max_o sum|w[o]|``: bounds every partial sum of every output (Realize's L1 bound)."""
    return int(x_max_abs) * int(np.abs(w.astype(np.int64)).reshape(w.shape[0], -1).sum(axis=1).max(initial=0))


def dense_ref(a, b) -> np.ndarray:
    """``a @ b`` in int64 (float64 for float operands)."""
    wide = np.float64 if np.issubdtype(a.dtype, np.floating) else np.int64
    return a.astype(wide) @ b.astype(wide)


def dense_l1_bound(a_max_abs: int, b: np.ndarray) -> int:
    return int(a_max_abs) * int(np.abs(b.astype(np.int64)).sum(axis=0).max(initial=0))


def random_operands(rng, x_shape, w_shape, dtype: str, acc: str, fan_in: int) -> tuple:
    """Random data and int8 weights with extremes planted; for int16, ranges scaled so that the L1 bound
    ``max|x| * fan_in * max|w|`` stays under 2**15 (what Realize proves before choosing int16)."""
    x_lo, x_hi = (0, 255) if dtype == "uint8" else (-128, 127)
    w_max = 128
    if acc == "int16":
        w_max = int(rng.integers(1, 129))
        x_cap = (INT16_LIMIT - 1) // (w_max * fan_in)
        if x_cap == 0:
            w_max, x_cap = 1, (INT16_LIMIT - 1) // fan_in
        x_lo, x_hi = max(x_lo, -x_cap), min(x_hi, x_cap)
    x = rng.integers(x_lo, x_hi + 1, x_shape)
    w = rng.integers(-w_max, min(w_max, 127) + 1, w_shape)
    x.flat[rng.integers(0, x.size, max(1, x.size // 8))] = x_hi       # extremes, so carries are exercised
    w.flat[rng.integers(0, w.size, max(1, w.size // 8))] = -w_max
    return x.astype(dtype), w.astype("int8")


def relax_main(x_shape, dtype: str, body, params=()) -> tvm.IRModule:
    """The module ``main(x, *params) = body(bb, x)``, ``x`` of ``x_shape`` (a symbolic batch as a ``tirx.Var``)
    and ``dtype``, in one dataflow block: ``body`` emits through the BlockBuilder ``bb`` and returns the result
    (a var or an expression), which becomes the block's output."""
    from tvm import relax

    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType(x_shape, dtype))
    with bb.function("main", [x, *params]):
        with bb.dataflow():
            out = bb.emit_output(body(bb, x))
        bb.emit_func_output(out)
    return bb.get()


def run_kernel(funcs, plan, data, weight, out_shape, target, weight_len) -> np.ndarray:
    """Build ``(pack, offset or None, kernel)`` PrimFuncs of ``plan`` for ``target`` (host-runnable), run them."""
    acc_dtype = plan.acc_dtype
    pack_func, offset_func, kernel_func = funcs
    dev = tvm.cpu()
    w = tvm.runtime.tensor(weight)
    pack = tvm.tirx.build(pack_func, target=target)
    packed = tvm.runtime.empty(plan.packed_weight_shape,
                               getattr(plan, "packed_weight_dtype", getattr(plan, "weight_dtype", "int8")), dev)
    pack(w, packed)
    args = [tvm.runtime.tensor(data), packed]
    if offset_func is not None:
        offset = tvm.runtime.empty((weight_len,), getattr(plan, "offset_dtype", acc_dtype), dev)
        tvm.tirx.build(offset_func, target=target)(w, offset)
        args.append(offset)
    out = tvm.runtime.empty(out_shape, acc_dtype, dev)
    tvm.tirx.build(kernel_func, target=target)(*args, out)
    return out.numpy()


@functools.lru_cache(maxsize=None)
def quantized_vgg(bits: int, model: str = "fmnist_vgg"):
    """A reference model quantized with ``Uniform(bits)`` on 256 training images."""
    import tvm_fxp
    from tvm_fxp.datasets import fashion_mnist

    return tvm_fxp.quantize(MODELS / f"{model}.onnx", fashion_mnist("train", limit=256).inputs,
                            tvm_fxp.Uniform(bits), progress=False)


def quantized_ternary(model: str = "fmnist_vgg", act_bits: int = 4):
    """A reference model quantized with Mellempudi et al.'s ternary clusters at ``act_bits``-bit activations on
    256 training images (ternary layers with <= 4-bit data: the aarch64 build's bit-serial candidates)."""
    import tvm_fxp
    from tvm_fxp.datasets import fashion_mnist
    from tvm_fxp.methods.mellempudi2017 import Mellempudi2017

    return tvm_fxp.quantize(MODELS / f"{model}.onnx", fashion_mnist("train", limit=256).inputs,
                            Mellempudi2017(act_bits=act_bits), progress=False)


def run_host(mod, images) -> np.ndarray:
    import tvm_fxp

    return tvm_fxp.Runner(tvm_fxp.build(mod)).run(images)


@functools.lru_cache(maxsize=None)
def quantized_model(name: str, bits: int):
    """``examples/models/{name}.onnx`` quantized with ``Uniform(bits)`` on 256 training images (cached)."""
    if name == "fmnist_vgg":
        return quantized_vgg(bits)
    import tvm_fxp
    from tvm_fxp.datasets import fashion_mnist

    return tvm_fxp.quantize(MODELS / f"{name}.onnx", fashion_mnist("train", limit=256).inputs,
                            tvm_fxp.Uniform(bits), progress=False)
