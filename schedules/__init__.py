"""Integer kernels for tvm-fxp: int8/uint8 x int8 conv2d and matmul with int16 or int32 accumulators.

``pipeline(target)`` is the Relax pipeline that uses them (``tvm.compile(mod, target,
relax_pipeline=tvm_fxp.schedules.pipeline(target))``; ``tvm_fxp.build`` does this) on LLVM CPU targets
(aarch64 NEON, x86 AVX2/AVX-512), also for the simulation's exact float64 convs/matmuls (parallel over the
images; ``threads.py`` sizes TVM's pool to the cores).  ``register()`` makes ``tvm.compile``'s default
pipeline use them too.  Importing this package changes no global TVM state.
"""

from . import legalize
from .conv2d_int import Conv2dPlan, conv2d_primfuncs, plan_conv2d
from .cpu_pipeline import relax_pipeline as pipeline
from .dense_int import DensePlan, dense_primfuncs, plan_dense
from .graph import per_kernel
from .legalize import KERNEL_ATTR, disabled, dispatched_kernels, legalize_map, original_legalize, register
from .targets import PRESETS, RPI4, KernelConfig, host, kernel_config, preset
from .threads import configure_pool

__all__ = ["Conv2dPlan", "DensePlan", "KERNEL_ATTR", "KernelConfig", "PRESETS", "RPI4", "configure_pool",
           "conv2d_primfuncs", "dense_primfuncs", "disabled", "dispatched_kernels", "host", "kernel_config",
           "legalize", "legalize_map", "original_legalize", "per_kernel", "pipeline", "plan_conv2d", "plan_dense",
           "preset", "register"]
