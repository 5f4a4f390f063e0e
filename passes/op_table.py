"""The README's table of supported ops, generated from Realize's rule registry.

``python -m tvm_fxp.passes.op_table README.md`` rewrites the block between ``<!-- ops:start -->`` and
``<!-- ops:end -->``; ``tests/passes/test_ops_detection.py`` checks the README holds what this generates.  One row
per realization rule (``realize.RULES``, ``realize.COMPOSITE_RULES``): the Relax ops it realizes, the ONNX ops
that import as them (directly or through a ``Prepare`` rewrite), and the rule's own docstring (first sentence
block) as the integer realization.
"""

from __future__ import annotations

import re
import sys

# ONNX ops per Relax op the importer (or a Prepare rewrite, in parentheses) produces
ONNX = {
    "relax.nn.conv2d": "Conv, (ConvTranspose: its s^2 phases, any groups), (Resize linear by an integer factor), "
                       "(BatchNormalization, Mul/Add folded)",
    "relax.matmul": "Gemm, MatMul",
    "relax.add": "Add, Sum, (Gemm/Conv bias)",
    "relax.concat": "Concat",
    "relax.mean": "GlobalAveragePool, ReduceMean (spatial)",
    "relax.nn.avg_pool2d": "AveragePool",
    "relax.multiply": "Mul (two activations)",
    "relax.strided_slice": "Slice, Split",
    "relax.nn.pad": "Pad (constant 0, edge, reflect)",
    "relax.image.resize2d": "Resize / Upsample (nearest: every coordinate mode but tf_crop_and_resize; linear: any "
                            "scale, align_corners, half_pixel, pytorch_half_pixel, asymmetric; scales or sizes)",
    "relax.maximum": "Max", "relax.minimum": "Min",
    "relax.nn.relu": "Relu", "relax.clip": "Clip, HardSigmoid (folded into its conv)",
    "relax.nn.max_pool2d": "MaxPool", "relax.reshape": "Reshape", "relax.flatten": "Flatten",
    "relax.permute_dims": "Transpose", "relax.squeeze": "Squeeze", "relax.expand_dims": "Unsqueeze",
    "relax.nn.softmax": "Softmax (output)", "relax.nn.log_softmax": "LogSoftmax (output)",
    "fxp.annotate": "(graph inputs, weights, biases, layer outputs)",
    "LRN": "LRN",
    "table": "Sigmoid, Tanh, Softplus, Exp, Erf, Elu, Selu, Gelu and their compositions with elementwise ops of the "
             "same input: SiLU/Swish x * Sigmoid(x), Mish x * Tanh(Softplus(x)), GELU, HardSwish (and x * Clip(x + 3, 0, 6) / 6)",
}


def _doc(fn) -> str:
    doc = (fn.__doc__ or "").strip().split("\n\n")[0]
    return " ".join(line.strip() for line in doc.splitlines()).replace("|", "\\|")


def markdown() -> str:
    from .analysis import FLOAT_ISLAND_OPS
    from .realize import COMPOSITE_RULES, RULES

    by_fn: dict = {}
    for op, fn in RULES.items():
        by_fn.setdefault(fn, []).append(op)
    rows = ["| ONNX | Relax | integer realization |", "|---|---|---|"]
    for fn, ops in by_fn.items():
        if set(ops) == set(FLOAT_ISLAND_OPS):
            continue
        onnx = "; ".join(ONNX[o] for o in sorted(ops) if o in ONNX)
        rows.append(f"| {onnx} | {', '.join(f'`{o}`' for o in sorted(ops))} | {_doc(fn)} |")
    for name, fn in COMPOSITE_RULES.items():
        rows.append(f"| {ONNX[name]} | {name} (several ops) | {_doc(fn)} |")
    island = next(fn for fn in RULES.values() if set(by_fn[fn]) == set(FLOAT_ISLAND_OPS))
    rows.append(f"| Log, Sqrt (no table form: not finite for every input) | float island, only with "
                f"`--allow-float-islands` | {_doc(island)} |")
    return "\n".join(rows)


START, END = "<!-- ops:start -->", "<!-- ops:end -->"


def update(path) -> bool:
    text = open(path).read()
    block = f"{START}\n{markdown()}\n{END}"
    new = re.sub(re.escape(START) + ".*?" + re.escape(END), lambda m: block, text, flags=re.S)
    if new != text:
        open(path, "w").write(new)
    return new != text


if __name__ == "__main__":
    print("updated" if update(sys.argv[1] if len(sys.argv) > 1 else "README.md") else "unchanged")
