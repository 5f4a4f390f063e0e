"""Prepare's sub-passes, each on a Before module against its Expected module (TVMScript,
``tvm.ir.assert_structural_equal``).  Weights are parameters of ``main`` bound to numpy constants."""

import numpy as np
from tvm.script import ir as I, relax as R, tirx as T

from tvm_fxp.passes.prepare import (AffineToDepthwise, CanonicalizeClip, CanonicalizeSum, FoldAffineIntoLayers,
                                    FoldConstantsNumpy, PushScalarMultiplies, RemoveDropout)

from .structural import assert_after, bind

F64 = np.float64


def test_fold_constants_numpy():
    """A transposed constant weight (Gemm with transB) becomes the transposed constant."""
    @I.ir_module
    class Before:
        @R.function
        def main(x: R.Tensor((2, 3), "float32"), w: R.Tensor((4, 3), "float32")) -> R.Tensor((2, 4), "float32"):
            with R.dataflow():
                wt = R.permute_dims(w, [1, 0])
                y = R.matmul(x, wt)
                R.output(y)
            return y

    @I.ir_module
    class Expected:
        @R.function
        def main(x: R.Tensor((2, 3), "float32"), c: R.Tensor((3, 4), "float32")) -> R.Tensor((2, 4), "float32"):
            with R.dataflow():
                wt = c                       # bound to the folded constant (dead-code elimination drops it)
                y = R.matmul(x, wt)
                R.output(y)
            return y

    w = np.arange(12, dtype="float32").reshape(4, 3)
    assert_after(FoldConstantsNumpy(), bind(Before, w=w), bind(Expected, c=np.ascontiguousarray(w.T)))


def test_canonicalize_clip():
    """The ONNX importer's ``call_tir(maximum, x, c)`` (Clip with an input bound) becomes ``clip(x, c, inf)``."""
    @I.ir_module
    class Before:
        @T.prim_func(private=True, s_tir=True)
        def maximum(x: T.Buffer((T.int64(1), T.int64(4)), "float32"), B: T.Buffer((), "float32"),
                    T_maximum: T.Buffer((T.int64(1), T.int64(4)), "float32")):
            T.func_attr({"tirx.noalias": True})
            for ax0, ax1 in T.grid(T.int64(1), T.int64(4)):
                with T.sblock("T_maximum"):
                    v_ax0, v_ax1 = T.axis.remap("SS", [ax0, ax1])
                    T_maximum[v_ax0, v_ax1] = T.max(x[v_ax0, v_ax1], B[()])

        @R.function
        def main(x: R.Tensor((1, 4), "float32")) -> R.Tensor((1, 4), "float32"):
            cls = Before
            with R.dataflow():
                y = R.call_tir(cls.maximum, (x, R.const(0.5, "float32")), out_ty=R.Tensor((1, 4), "float32"))
                R.output(y)
            return y

    @I.ir_module
    class Expected:
        @R.function
        def main(x: R.Tensor((1, 4), "float32")) -> R.Tensor((1, 4), "float32"):
            with R.dataflow():
                y = R.clip(x, R.prim_value(T.float64(0.5)), R.prim_value(T.float64("inf")))
                R.output(y)
            return y

    assert_after(CanonicalizeClip(), Before, Expected)


def test_remove_dropout():
    """``dropout(x)[0]`` is ``x`` at inference (the dead dropout call is left to dead-code elimination)."""
    @I.ir_module
    class Before:
        @R.function
        def main(x: R.Tensor((1, 4), "float32")) -> R.Tensor((1, 4), "float32"):
            with R.dataflow():
                d = R.nn.dropout(x, 0.5)
                y = d[0]
                z = R.nn.relu(y)
                R.output(z)
            return z

    @I.ir_module
    class Expected:
        @R.function
        def main(x: R.Tensor((1, 4), "float32")) -> R.Tensor((1, 4), "float32"):
            with R.dataflow():
                d = R.nn.dropout(x, 0.5)
                z = R.nn.relu(x)
                R.output(z)
            return z

    assert_after(RemoveDropout(), Before, Expected)


def test_canonicalize_sum():
    """ONNX ``Sum`` as imported, ``sum(stack((broadcast_to(a), b, c)), axis=0)``, becomes ``(a + b) + c``."""
    @I.ir_module
    class Before:
        @R.function
        def main(x: R.Tensor((2, 4), "float32")) -> R.Tensor((2, 4), "float32"):
            with R.dataflow():
                a = R.nn.relu(x)
                b = R.abs(x)
                c = R.negative(x)
                a1 = R.broadcast_to(a, R.shape([2, 4]))
                st = R.stack((a1, b, c), axis=0)
                s = R.sum(st, axis=[0])
                R.output(s)
            return s

    @I.ir_module
    class Expected:
        @R.function
        def main(x: R.Tensor((2, 4), "float32")) -> R.Tensor((2, 4), "float32"):
            with R.dataflow():
                a = R.nn.relu(x)
                b = R.abs(x)
                c = R.negative(x)
                a1 = R.broadcast_to(a, R.shape([2, 4]))
                st = R.stack((a1, b, c), axis=0)
                s0 = R.add(a, b)
                s = R.add(s0, c)
                R.output(s)
            return s

    assert_after(CanonicalizeSum(), Before, Expected)


def test_push_scalar_multiplies():
    """``clip(x, 0, 6) * 0.5`` becomes ``clip(x * 0.5, 0, 3)``, so the scale can join an affine chain."""
    @I.ir_module
    class Before:
        @R.function
        def main(x: R.Tensor((1, 4), "float32")) -> R.Tensor((1, 4), "float32"):
            with R.dataflow():
                c = R.clip(x, 0, 6)
                y = R.multiply(c, R.const(0.5, "float32"))
                R.output(y)
            return y

    @I.ir_module
    class Expected:
        @R.function
        def main(x: R.Tensor((1, 4), "float32")) -> R.Tensor((1, 4), "float32"):
            with R.dataflow():
                xs = R.multiply(x, R.const(0.5, "float32"))
                c = R.clip(xs, R.prim_value(T.float64(0.0)), R.prim_value(T.float64(3.0)))
                R.output(c)
            return c

    assert_after(PushScalarMultiplies(), Before, Expected)


def test_fold_affine_into_layers():
    """A per-channel scale and shift after a conv2d (batch-norm as Mul/Add) fold into its weights and one bias."""
    @I.ir_module
    class Before:
        @R.function
        def main(x: R.Tensor((1, 2, 4, 4), "float32"), w: R.Tensor((3, 2, 1, 1), "float32"),
                 s: R.Tensor((1, 3, 1, 1), "float32"), b: R.Tensor((1, 3, 1, 1), "float32")
                 ) -> R.Tensor((1, 3, 4, 4), "float32"):
            with R.dataflow():
                y = R.nn.conv2d(x, w)
                z = R.multiply(y, s)
                u = R.add(z, b)
                R.output(u)
            return u

    @I.ir_module
    class Expected:
        @R.function
        def main(x: R.Tensor((1, 2, 4, 4), "float32"), w: R.Tensor((3, 2, 1, 1), "float32"),
                 b: R.Tensor((1, 3, 1, 1), "float32")) -> R.Tensor((1, 3, 4, 4), "float32"):
            with R.dataflow():
                y = R.nn.conv2d(x, w)
                u = R.add(y, b)
                R.output(u)
            return u

    rng = np.random.default_rng(0)
    w, b = rng.normal(size=(3, 2, 1, 1)).astype("float32"), rng.normal(size=(1, 3, 1, 1)).astype("float32")
    s = rng.uniform(0.5, 2, (1, 3, 1, 1)).astype("float32")
    folded = (w.astype(F64) * s.reshape(3, 1, 1, 1).astype(F64)).astype("float32")
    assert_after(FoldAffineIntoLayers(), bind(Before, w=w, s=s, b=b), bind(Expected, w=folded, b=b))


def test_affine_to_depthwise():
    """A per-channel affine chain on an activation with no conv to fold into is a depthwise 1x1 conv2d + bias."""
    @I.ir_module
    class Before:
        @R.function
        def main(x: R.Tensor((1, 3, 4, 4), "float32"), s: R.Tensor((1, 3, 1, 1), "float32"),
                 b: R.Tensor((1, 3, 1, 1), "float32")) -> R.Tensor((1, 3, 4, 4), "float32"):
            with R.dataflow():
                a = R.nn.relu(x)
                y = R.multiply(a, s)
                z = R.add(y, b)
                R.output(z)
            return z

    @I.ir_module
    class Expected:
        @R.function
        def main(x: R.Tensor((1, 3, 4, 4), "float32"), w: R.Tensor((3, 1, 1, 1), "float32"),
                 b: R.Tensor((1, 3, 1, 1), "float32")) -> R.Tensor((1, 3, 4, 4), "float32"):
            with R.dataflow():
                a = R.nn.relu(x)
                dw = R.nn.conv2d(a, w, groups=3)
                z = R.add(dw, b)
                R.output(z)
            return z

    rng = np.random.default_rng(1)
    s, b = rng.uniform(0.5, 2, (1, 3, 1, 1)).astype("float32"), rng.normal(size=(1, 3, 1, 1)).astype("float32")
    assert_after(AffineToDepthwise(), bind(Before, s=s, b=b), bind(Expected, w=s.reshape(3, 1, 1, 1), b=b))
