"""Integer kernels for tvm-fxp: int8/uint8 x int8 conv2d and matmul with int16 or int32 accumulators.

Importing this package registers the Relax legalization (``legalize.py``) that makes ``tvm.compile`` use
them for realized modules on LLVM CPU targets (aarch64 NEON, x86 AVX2/AVX-512), and for the simulation's
exact float64 convs/matmuls (parallel over the images; ``threads.py`` sizes TVM's pool to the cores).
"""

from . import legalize
from .threads import configure_pool
from .conv2d_int import Conv2dPlan, conv2d_primfuncs, plan_conv2d
from .dense_int import DensePlan, dense_primfuncs, plan_dense
from .legalize import KERNEL_ATTR, disabled, dispatched_kernels, original_legalize
from .targets import PRESETS, RPI4, KernelConfig, host, kernel_config, preset

configure_pool()

__all__ = ["Conv2dPlan", "DensePlan", "KERNEL_ATTR", "KernelConfig", "PRESETS", "RPI4", "conv2d_primfuncs",
           "dense_primfuncs", "disabled", "dispatched_kernels", "host", "kernel_config", "legalize", "original_legalize", "plan_conv2d",
           "plan_dense", "preset"]
