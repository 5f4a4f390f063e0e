"""CanonicalizeClip (passes/canonicalize_clip.py): Before/Expected in TVMScript, compared structurally."""

from tvm.script import ir as I, relax as R, tirx as T

from tvm_fxp.passes.canonicalize_clip import CanonicalizeClip

from .structural import assert_after


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
