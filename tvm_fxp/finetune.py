"""``tvm-fxp finetune``: train the float weights with a plan's fixed-point formats in the forward pass.

The papers' own step after choosing formats (Lin et al. 2016: fine-tuning lifts the fixed-point model past
float; Mellempudi et al. 2017: training at low precision recovers ternary networks).  Given a directory written
by ``tvm-fxp quantize`` (``source.onnx`` + ``plan.json``):

1. the ONNX graph is interpreted in PyTorch (the ``train`` extra) with its batch norms folded into the preceding
   convolutions exactly as ``tvm_fxp`` folds them, every weighted layer matched to the layer graph's layer by
   its (folded) weights;
2. every operand takes its plan format in the forward pass -- weights and biases fake-quantized, the input and
   every layer's output activation fake-quantized at the layer's anchor (Conv/Gemm/Add/pool; ReLU and max-pool
   of on-grid values stay on the grid) -- with the straight-through estimator through the rounding and a zero
   gradient outside the format's range (the clip); Mellempudi's ternary/4-bit cluster scales are re-derived
   from the updated weights at every step, as the paper does;
3. training uses the training split (the first 55,000 images), model selection the validation split (the
   epoch with the best validation top-1, the starting point included, is kept); the test split is not read;
4. the trained weights are written as a new float ONNX (batch norms folded, the rest of the graph unchanged)
   and handed to ``tvm-fxp quantize`` with the same plan (Mellempudi: re-derived with the same parameters), so
   DIR2 holds what ``quantize`` writes -- plan, integer library, summary with the same keys -- checked bit for
   bit against the simulation as always.

Why PyTorch and not ``tvm.relax.training``: measured in ``bench/results/finetune.json`` (``relax_training``).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

from .formats import FixedPointFormat
from .plan import Plan

SUPPORTED = {"Conv", "Gemm", "BatchNormalization", "Relu", "MaxPool", "AveragePool", "GlobalAveragePool", "Add",
             "Flatten", "Reshape", "Identity"}
STATE = "finetune_state.pt"


class FinetuneError(ValueError):
    pass


def _torch():
    try:
        import torch
    except ImportError:
        raise FinetuneError("tvm-fxp finetune needs PyTorch: pip install 'tvm-fxp[train]'") from None
    return torch


_STE = None


def _fake_quant_ste():
    """``FakeQuantSTE.apply(x, step, qmin, qmax)``: ``clip(x, qmin*step, qmax*step)`` rounded to the grid of
    ``step`` half away from zero (the integer graph's rounding) in the forward pass; in the backward pass the
    straight-through estimator through the rounding and the clip's own gradient (1 inside ``[qmin*step,
    qmax*step]``, 0 outside).  One autograd node that keeps a boolean mask, where ``clipped + (round(...) -
    clipped).detach()`` kept a chain of five elementwise nodes and their float tensors."""
    global _STE
    if _STE is None:
        torch = _torch()

        class FakeQuantSTE(torch.autograd.Function):
            @staticmethod
            def forward(ctx, x, step, qmin, qmax):
                lo, hi = qmin * step, qmax * step
                if isinstance(step, float):
                    clipped = torch.clamp(x, lo, hi)
                else:
                    clipped = torch.minimum(torch.maximum(x, lo), hi)
                if ctx.needs_input_grad[0]:
                    ctx.save_for_backward(clipped == x)     # inside the range: the clip left x as it was
                # round half away from zero, as the integer graph and its simulation do (sign * floor(|s| + 0.5));
                # fixed-point values hit exact ties often (a requantize drops whole bits), so round-half-even
                # would train a different network than the one deployed
                s = clipped.div_(step)
                return s.sign().mul_(s.abs().add_(0.5).floor_()).mul_(step)

            @staticmethod
            def backward(ctx, grad):
                (inside,) = ctx.saved_tensors
                return grad * inside, None, None, None

        _STE = FakeQuantSTE.apply
    return _STE


# ---- the ONNX graph, batch norms folded -------------------------------------------------------------------

def fold_batchnorm(model):
    """A copy of ``model`` with every Conv -> BatchNormalization pair folded into the Conv (weight and bias),
    float64 arithmetic rounded once to float32; other nodes unchanged."""
    import onnx
    from onnx import numpy_helper

    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    inits = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    producers = {o: n for n in g.node for o in n.output}
    consumers: dict = {}
    for n in g.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    drop, new_inits = set(), {}
    for bn in [n for n in g.node if n.op_type == "BatchNormalization"]:
        conv = producers.get(bn.input[0])
        if conv is None or conv.op_type != "Conv" or len(consumers.get(conv.output[0], [])) != 1:
            raise FinetuneError(f"BatchNormalization {bn.name or bn.output[0]} does not follow a Conv: finetune "
                                "folds batch norms into convolutions only")
        eps = next((a.f for a in bn.attribute if a.name == "epsilon"), 1e-5)
        gamma, beta, mean, var = (inits[x].astype(np.float64) for x in bn.input[1:5])
        w = inits[conv.input[1]].astype(np.float64)
        b = inits[conv.input[2]].astype(np.float64) if len(conv.input) > 2 and conv.input[2] else 0.0
        scale = gamma / np.sqrt(var + eps)
        wname, bname = conv.input[1] + "_folded", (conv.output[0] + "_bias_folded")
        new_inits[wname] = (w * scale[:, None, None, None]).astype(np.float32)
        new_inits[bname] = ((b - mean) * scale + beta).astype(np.float32)
        del conv.input[1:]
        conv.input.extend([wname, bname])
        conv.output[0] = bn.output[0]
        drop.add(id(bn))
    keep = [n for n in g.node if id(n) not in drop]
    del g.node[:]
    g.node.extend(keep)
    used = {i for n in g.node for i in n.input}
    old = [t for t in g.initializer if t.name in used]
    del g.initializer[:]
    g.initializer.extend(old + [numpy_helper.from_array(v, k) for k, v in new_inits.items()])
    return m


def _attrs(node) -> dict:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


class QuantNet:
    """The folded ONNX graph as a PyTorch computation with the plan's formats in the forward pass."""

    def __init__(self, model, lg, plan: Plan):
        torch = _torch()
        from onnx import numpy_helper

        self.model, self.lg, self.plan = model, lg, plan
        g = model.graph
        unsupported = sorted({n.op_type for n in g.node} - SUPPORTED)
        if unsupported:
            raise FinetuneError(f"finetune interprets {sorted(SUPPORTED)}; the model has {unsupported}")
        self.inits = {t.name: numpy_helper.to_array(t) for t in g.initializer}
        self.input_name = g.input[0].name
        self.output_name = g.output[0].name
        self.params = {}          # initializer name -> trainable tensor (weights and biases of Conv/Gemm)
        self.weighted = {}        # node output -> (layer, weight init, bias init, transposed)
        self.anchor_layer = {}    # node output -> layer name whose output format applies there
        self._match(g)
        for name in {v for _, w, b, _ in self.weighted.values() for v in (w, b) if v}:
            self.params[name] = torch.nn.Parameter(torch.from_numpy(self.inits[name].astype(np.float32).copy()))
        self.fixed = {k: torch.from_numpy(np.asarray(v)) for k, v in self.inits.items() if k not in self.params}
        self.cluster = None
        if plan.method == "mellempudi2017":
            self.cluster = plan.config

    def _match(self, g) -> None:
        """Each Conv/Gemm node <- the layer with the same (folded) weights; Add/pool nodes <- the layer with the
        same producers; max-pool, flatten, reshape and ReLU pass their producer's layer through."""
        weighted = [l for l in self.lg.layers.values() if l.weight is not None]
        layer_of = {self.input_name: "input"}
        used = set()
        for n in g.node:
            if n.op_type in ("Conv", "Gemm"):
                w = self.inits.get(n.input[1])
                if w is None:
                    raise FinetuneError(f"{n.op_type} {n.name or n.output[0]}: its weight is no initializer")
                trans = n.op_type == "Gemm" and bool(_attrs(n).get("transB", 0))
                cand = w.T if (n.op_type == "Gemm" and trans) else w
                hits = [l for l in weighted if l.name not in used and l.weight.shape == cand.shape
                        and np.allclose(l.weight, cand, rtol=1e-4, atol=1e-6)]
                if len(hits) != 1:
                    raise FinetuneError(f"{n.op_type} {n.name or n.output[0]}: no single layer of the plan has its "
                                        f"weights ({len(hits)} candidates); was DIR quantized from this model?")
                used.add(hits[0].name)
                bias = n.input[2] if len(n.input) > 2 and n.input[2] else None
                if (bias is None) != (hits[0].bias is None):
                    raise FinetuneError(f"{n.op_type} {n.name}: bias presence differs from layer {hits[0].name}")
                self.weighted[n.output[0]] = (hits[0].name, n.input[1], bias, trans)
                self.anchor_layer[n.output[0]] = hits[0].name
                layer_of[n.output[0]] = hits[0].name
            elif n.op_type in ("Add", "GlobalAveragePool", "AveragePool"):
                srcs = [layer_of.get(i) for i in n.input]
                ops = ("add",) if n.op_type == "Add" else ("mean", "avgpool")
                hits = [l for l in self.lg.layers.values() if l.op in ops and l.name not in used
                        and sorted(l.inputs) == sorted(srcs)]
                if not hits:
                    raise FinetuneError(f"{n.op_type} {n.name or n.output[0]}: no layer of the plan matches it")
                used.add(hits[0].name)
                self.anchor_layer[n.output[0]] = hits[0].name
                layer_of[n.output[0]] = hits[0].name
            else:       # Relu, MaxPool, Flatten, Reshape, Identity: the producer's layer
                layer_of[n.output[0]] = layer_of.get(n.input[0])
        missing = [l.name for l in weighted if l.name not in used]
        if missing:
            raise FinetuneError(f"layers {missing} of the plan have no Conv/Gemm in the model")

    # ---- fake quantization ---------------------------------------------------------------------------------
    @staticmethod
    def _scale_shape(fmt: FixedPointFormat, ndim: int):
        shape = [1] * ndim
        shape[fmt.axis if fmt.axis >= 0 else fmt.axis + ndim] = -1
        return shape

    def fake_quant(self, x, fmt: FixedPointFormat):
        """Round half away from zero to the format's grid, saturate; STE inside the range, zero outside."""
        torch = _torch()
        if fmt.per_channel:
            step = torch.tensor([2.0 ** -f for f in fmt.frac_list], dtype=x.dtype)
            if fmt.multiplier is not None:
                step = step * torch.tensor(fmt.multiplier, dtype=x.dtype)
            step = step.reshape(self._scale_shape(fmt, x.ndim))
        else:
            step = 2.0 ** -fmt.frac
        return self._ste(x, step, fmt.qmin, fmt.qmax)

    @staticmethod
    def _ste(x, step, qmin, qmax):
        return _fake_quant_ste()(x, step, qmin, qmax)

    def cluster_weight(self, w, layer, transposed: bool):
        """Mellempudi's clusters re-derived from the current weights: per cluster of filters the scale (ternary:
        mean |w| above 0.7 mean |w|; 4-bit: the MSE-best of the method's candidates) as ``m * 2**-f``."""
        torch = _torch()
        from .methods.mellempudi2017 import cluster_alpha, multiplier_and_shift

        cfg = self.cluster
        fmt = self.plan[f"{layer.name}.weight"]
        wl = w.t() if transposed else w          # layer layout (OIHW, or (K, N) for matmul)
        axis = layer.weight_axis
        wc = torch.movedim(wl, axis, 0)
        steps = []
        with torch.no_grad():
            arr = wc.detach().numpy()
            for start in range(0, arr.shape[0], cfg["cluster"]):
                alpha, _ = cluster_alpha(arr[start:start + cfg["cluster"]], cfg["weights"])
                m, f = multiplier_and_shift(alpha, cfg["multiplier_bits"])
                steps += [m * 2.0 ** -f] * min(cfg["cluster"], arr.shape[0] - start)
        step = torch.tensor(steps, dtype=w.dtype).reshape([-1] + [1] * (wc.ndim - 1))
        q = torch.movedim(self._ste(wc, step, fmt.qmin, fmt.qmax), 0, axis)
        return q.t() if transposed else q

    def _weight(self, name, layer_name, transposed):
        layer = self.lg.layers[layer_name]
        w = self.params[name]
        fmt = self.plan[layer.weight_key]
        if self.cluster is not None and fmt.multiplier is not None:
            return self.cluster_weight(w, layer, transposed)
        if transposed:
            return self.fake_quant(w.t(), fmt).t()
        return self.fake_quant(w, fmt)

    # ---- forward ------------------------------------------------------------------------------------------
    def __call__(self, x, quantized: bool = True, record: str | None = None):
        """The logits; with ``record`` (an activation's plan key), that activation's values before its own
        format is applied (every format upstream applied), computed no further than needed."""
        torch = _torch()
        import torch.nn.functional as F

        if record == "input":
            return x
        env = {self.input_name: self.fake_quant(x, self.plan["input"]) if quantized else x}

        def get(name):
            if name in env:
                return env[name]
            if name in self.params:
                return self.params[name]
            return self.fixed[name]

        for n in self.model.graph.node:
            a = _attrs(n)
            op = n.op_type
            if op in ("Conv", "Gemm"):
                layer, wn, bn, trans = self.weighted[n.output[0]]
                w = self._weight(wn, layer, trans) if quantized else self.params[wn]
                b = None
                if bn is not None:
                    b = self.fake_quant(self.params[bn], self.plan[f"{layer}.bias"]) if quantized else self.params[bn]
                xin = get(n.input[0])
                if op == "Conv":
                    pads = a.get("pads", [0, 0, 0, 0])
                    if pads[0] != pads[2] or pads[1] != pads[3]:
                        xin = F.pad(xin, (pads[1], pads[3], pads[0], pads[2]))
                        pads = [0, 0]
                    y = F.conv2d(xin, w, b, a.get("strides", [1, 1]), pads[:2], a.get("dilations", [1, 1]),
                                 a.get("group", 1))
                else:
                    if a.get("transA", 0):
                        xin = xin.t()
                    y = xin @ (w.t() if trans else w) * a.get("alpha", 1.0)
                    if b is not None:
                        y = y + a.get("beta", 1.0) * b
            elif op == "Relu":
                y = torch.relu(get(n.input[0]))
            elif op == "MaxPool":
                k = a["kernel_shape"]
                pads = a.get("pads", [0, 0, 0, 0])
                y = F.max_pool2d(get(n.input[0]), k, a.get("strides", k), pads[:2], ceil_mode=bool(a.get("ceil_mode", 0)))
            elif op == "AveragePool":
                k = a["kernel_shape"]
                pads = a.get("pads", [0, 0, 0, 0])
                y = F.avg_pool2d(get(n.input[0]), k, a.get("strides", k), pads[:2],
                                 count_include_pad=bool(a.get("count_include_pad", 0)))
            elif op == "GlobalAveragePool":
                y = get(n.input[0]).mean(dim=(2, 3), keepdim=True)
            elif op == "Add":
                y = get(n.input[0]) + get(n.input[1])
            elif op == "Flatten":
                y = torch.flatten(get(n.input[0]), a.get("axis", 1))
            elif op == "Reshape":
                shape = [int(v) for v in get(n.input[1]).tolist()]
                y = get(n.input[0]).reshape([s if s != 0 else get(n.input[0]).shape[i] for i, s in enumerate(shape)])
            else:   # Identity
                y = get(n.input[0])
            if quantized and n.output[0] in self.anchor_layer:
                layer = self.lg.layers[self.anchor_layer[n.output[0]]]
                if record == layer.output_key:
                    return y
                y = self.fake_quant(y, self.plan[layer.output_key])
            env[n.output[0]] = y
        return env[self.output_name]

    def activation_keys(self) -> list:
        """The plan keys of the activations the forward pass quantizes, in topological order."""
        anchored = set(self.anchor_layer.values())
        return ["input"] + [l.output_key for l in self.lg.layers.values() if l.name in anchored]

    @classmethod
    def _least_squares_frac(cls, v, f0: int, span, qmin: int, qmax: int) -> int:
        """The frac in ``f0 + span`` (a power-of-two step, the width's ``[qmin, qmax]``) whose quantization of
        ``v`` has the least squared error; the smallest such frac on a tie."""
        errs = [(float((cls._ste(v, 2.0 ** -f, qmin, qmax) - v).pow(2).sum()), f)
                for f in range(f0 + span[0], f0 + span[1] + 1)]
        return min(errs)[1]

    def refit_weight_fracs(self, span=(-2, 2)) -> dict:
        """Each weight's frac (per tensor or per channel; not Mellempudi's cluster scales) re-chosen in ``f0 +
        span`` for the least squared error of its quantization; ``f0`` is the frac before (from the range)."""
        torch = _torch()
        from dataclasses import replace

        changed = {}
        with torch.no_grad():
            for layer_name, wn, _, trans in self.weighted.values():
                layer = self.lg.layers[layer_name]
                fmt = self.plan[layer.weight_key]
                if fmt.multiplier is not None:
                    continue
                w = self.params[wn].detach().double()
                w = w.t() if trans else w
                wc = torch.movedim(w, layer.weight_axis, 0).reshape(w.shape[layer.weight_axis], -1)
                if not fmt.per_channel:
                    wc = wc.reshape(1, -1)
                fr = [self._least_squares_frac(row, f0, span, fmt.qmin, fmt.qmax)
                      for row, f0 in zip(wc, fmt.frac_list if fmt.per_channel else [fmt.frac])]
                new = tuple(fr) if fmt.per_channel else fr[0]
                if new != fmt.frac:
                    changed[layer.weight_key] = (fmt.frac, new)
                    self.plan.tensors[layer.weight_key] = replace(fmt, frac=new)
        return changed

    def refit_activation_fracs(self, x, span=(-1, 3)) -> dict:
        """Re-derive every activation's clipping point from the current weights: in topological order (formats
        upstream applied), the ``frac`` in ``f0 + span`` (same width and signedness; a power-of-two step as
        always) whose quantization of the tensor's values on ``x`` has the least squared error; ``f0`` is the
        frac before.  A bias whose frac would exceed its layer's new accumulator scale ``f_x + f_w`` is
        lowered to it (the integer graph adds the bias at that scale).  Returns ``{key: (old, new)}`` for the
        fracs that changed."""
        torch = _torch()
        from dataclasses import replace

        changed = {}
        with torch.no_grad():
            for key in self.activation_keys():
                fmt = self.plan[key]
                f = self._least_squares_frac(self(x, record=key).double(), fmt.frac, span, fmt.qmin, fmt.qmax)
                if f != fmt.frac:
                    changed[key] = (fmt.frac, f)
                    self.plan.tensors[key] = replace(fmt, frac=f)
        changed.update(self.cap_biases())
        return changed

    def cap_biases(self) -> dict:
        """Every bias frac lowered to its layer's accumulator scale ``f_x + f_w`` where it exceeds it (the
        integer graph adds the bias at that scale)."""
        from dataclasses import replace

        changed = {}
        for layer in self.lg.layers.values():
            if layer.weight is None or layer.bias is None:
                continue
            x_frac = self.plan[self.lg.layers[layer.inputs[0]].output_key].frac
            acc = [x_frac + f for f in self.plan[layer.weight_key].frac_list]
            b = self.plan[layer.bias_key]
            if b.per_channel:
                fr = tuple(min(f, a) for f, a in zip(b.frac_list, acc if len(acc) > 1 else acc * len(b.frac_list)))
            else:
                fr = min(b.frac, min(acc))
            if fr != b.frac:
                changed[layer.bias_key] = (b.frac, fr)
                self.plan.tensors[layer.bias_key] = replace(b, frac=fr)
        return changed

    def state(self) -> dict:
        return {k: v.detach().numpy().copy() for k, v in self.params.items()}

    def load_state(self, state: dict) -> None:
        torch = _torch()
        with torch.no_grad():
            for k, v in state.items():
                self.params[k].copy_(torch.from_numpy(v))

    def export(self, path: Path) -> None:
        """The folded model with the trained weights as its initializers."""
        import onnx
        from onnx import numpy_helper

        m = onnx.ModelProto()
        m.CopyFrom(self.model)
        state = self.state()
        for t in m.graph.initializer:
            if t.name in state:
                t.CopyFrom(numpy_helper.from_array(state[t.name].astype(np.float32), t.name))
        onnx.save(m, str(path))


# ---- training ---------------------------------------------------------------------------------------------

def _augment(torch, x, gen):
    """Random horizontal flip and 2-pixel random crop, as the reference models were trained."""
    import torch.nn.functional as F

    n = x.shape[0]
    flip = torch.rand(n, generator=gen) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(3), x)
    padded = F.pad(x, (2, 2, 2, 2))
    h, w = x.shape[2], x.shape[3]
    dy = torch.randint(0, 5, (n,), generator=gen)
    dx = torch.randint(0, 5, (n,), generator=gen)
    rows = dy[:, None] + torch.arange(h)[None, :]
    cols = dx[:, None] + torch.arange(w)[None, :]
    idx = torch.arange(n)[:, None, None]
    return torch.stack([padded[idx, c, rows[:, :, None], cols[:, None, :]] for c in range(x.shape[1])], 1)


def evaluate(net: QuantNet, x, y, quantized=True, batch=1000) -> float:
    torch = _torch()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(x), batch):
            out = net(torch.from_numpy(x[i:i + batch]), quantized)
            correct += int((out.argmax(1).numpy() == y[i:i + batch]).sum())
    return correct / len(x)


def logit_scale(plan: Plan, lg) -> float:
    """The training loss's divisor of the logits: their format's step where it is > 1 (a coarse fixed-point
    format of the logits, e.g. Q4 with f = -2, makes the raw logits multiples of 4 whose softmax saturates and
    whose gradient vanishes), else 1 (the model's own logits).  Only the loss sees it: argmax is unchanged."""
    fmt = plan[lg.layers[lg.output].output_key]
    return max(1.0, max(2.0 ** -f for f in fmt.frac_list))


def default_lr(plan: Plan, lg) -> float:
    """5e-4 when the median weighted layer's weights are <= 4 bits wide (ternary, 4-bit: the weights must move
    across coarse steps), else 1e-4 (8-bit and Lin 2016's plans: a small correction of a good model)."""
    bits = sorted(plan[l.weight_key].bits for l in lg.layers.values() if l.weight is not None)
    return 5e-4 if bits and bits[(len(bits) - 1) // 2] <= 4 else 1e-4


def train(net: QuantNet, train_data, val_data, epochs: int, out: Path, lr: float, batch: int, seed: int,
          progress: bool = True, steps_per_epoch: int | None = None, threads: int | None = None,
          refit: bool = False, teacher: QuantNet | None = None, distill: float = 0.0,
          temperature: float = 1.0, augment: bool = False) -> dict:
    """Adam with a cosine schedule over ``epochs``; after each epoch the validation top-1 (the plan's formats in
    place) and a checkpoint ``out/finetune_state.pt`` (weights, formats, optimizer, best epoch) to resume from.
    With ``refit``, before the first step every weight's frac and every activation's frac (same widths) is
    re-derived for least squared error (``QuantNet.refit_weight_fracs``, ``refit_activation_fracs`` on 1,024
    training images) and kept through training (re-deriving the activations' fracs after each epoch as well was
    measured worse: fmnist_vgg uniform 4-bit validation 0.9200 -> 0.9125 in epoch 2, the logits' format
    following their growth to coarser steps); the epoch kept (best validation, the plan as handed in included)
    keeps its formats.  With ``augment`` the training images get random horizontal flips and 2-pixel crops
    (as the reference models were trained); off by default: fine-tuning on the images as they are measured
    better (fmnist_resnet uniform 4-bit, 2 epochs: test 0.9234 against 0.9203 and 0.9171 with augmentation,
    seeds 0 and 1).

    With a ``teacher`` (the float network handed in) and ``distill`` = a > 0 the loss is knowledge distillation
    (Hinton et al. 2015): ``(1 - a) * CE(labels) + a * T**2 * KL(softmax(teacher / T) || softmax(student / T))``,
    both logits divided by the loss's logit scale first; the teacher's logits come from the same batch,
    float weights, no formats."""
    torch = _torch()
    import torch.nn.functional as F
    from tqdm.auto import tqdm

    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(seed)
    x, y = train_data.inputs, train_data.labels
    n_steps = steps_per_epoch or -(-len(x) // batch)
    params = list(net.params.values())
    opt = torch.optim.Adam(params, lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, epochs * n_steps))
    ckpt = out / STATE
    history, start = [], 0
    probe_x, probe_y = torch.from_numpy(x[:512]), torch.from_numpy(y[:512])
    scale = logit_scale(net.plan, net.lg)   # the plan's own: the loss before is the one of the model handed in

    def probe_loss() -> float:
        with torch.no_grad():
            return float(F.cross_entropy(net(probe_x) / scale, probe_y))

    refit_x = torch.from_numpy(x[:1024])

    def formats() -> dict:
        return dict(net.plan.tensors)

    before = evaluate(net, val_data.inputs, val_data.labels)
    loss_before = probe_loss()
    best = {"epoch": 0, "val_top1": before, "state": net.state(), "formats": formats()}
    refits = []
    if ckpt.exists():
        saved = torch.load(ckpt, weights_only=False)
        net.load_state(saved["weights"])
        opt.load_state_dict(saved["optimizer"])
        sched.load_state_dict(saved["scheduler"])
        history, start, best = saved["history"], saved["epoch"], saved["best"]
        net.plan.tensors.update(saved["formats"])
        refits = saved["refits"]
        before, loss_before = saved["val_before"], saved["loss_before"]
        print(f"resuming after epoch {start} of {epochs} ({ckpt})", file=sys.stderr)
    elif refit:
        changed = {**net.refit_weight_fracs(), **net.refit_activation_fracs(refit_x)}
        refits.append({"epoch": 0, "changed": changed, "val_top1": evaluate(net, val_data.inputs, val_data.labels)})
        print(f"formats re-derived from the weights: {len(changed)} fracs changed, validation top-1 "
              f"{refits[-1]['val_top1']:.4f}", file=sys.stderr)
    scale = logit_scale(net.plan, net.lg)
    gen = torch.Generator().manual_seed(seed + start)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    for epoch in range(start, epochs):
        t0 = time.time()
        perm = torch.randperm(len(x), generator=gen)[:n_steps * batch]
        bar = tqdm(range(n_steps), desc=f"epoch {epoch + 1}/{epochs}", disable=not progress, unit="step")
        loss_sum = seen = 0
        for s in bar:
            idx = perm[s * batch:(s + 1) * batch]
            if len(idx) == 0:
                break
            xb = _augment(torch, xt[idx], gen) if augment else xt[idx]
            logits = net(xb) / scale
            loss = F.cross_entropy(logits, yt[idx])
            if teacher is not None and distill > 0:
                with torch.no_grad():
                    soft = F.log_softmax(teacher(xb, quantized=False) / (scale * temperature), 1)
                kd = F.kl_div(F.log_softmax(logits / temperature, 1), soft, reduction="batchmean", log_target=True)
                loss = (1 - distill) * loss + distill * temperature ** 2 * kd
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            loss_sum += float(loss.detach()) * len(idx)
            seen += len(idx)
            bar.set_postfix(loss=f"{loss_sum / seen:.4f}")
        val = evaluate(net, val_data.inputs, val_data.labels)
        bar.set_postfix(loss=f"{loss_sum / seen:.4f}", val=f"{val:.4f}")
        bar.close()
        history.append({"epoch": epoch + 1, "train_loss": loss_sum / seen, "val_top1": val,
                        "wall_s": round(time.time() - t0, 1)})
        print(f"epoch {epoch + 1}/{epochs}: loss {loss_sum / seen:.4f}, validation top-1 {val:.4f} "
              f"({time.time() - t0:.0f} s)", file=sys.stderr)
        if val > best["val_top1"]:
            best = {"epoch": epoch + 1, "val_top1": val, "state": net.state(), "formats": formats()}
        torch.save({"weights": net.state(), "formats": formats(), "refits": refits, "optimizer": opt.state_dict(),
                    "scheduler": sched.state_dict(),
                    "history": history, "epoch": epoch + 1, "best": best, "val_before": before,
                    "loss_before": loss_before}, ckpt)
    net.load_state(best["state"])
    net.plan.tensors.update(best["formats"])
    return {"refits": [{**r, "changed": {k: list(v) for k, v in r["changed"].items()}} for r in refits],
            "val_top1_before": before, "history": history, "best_epoch": best["epoch"],
            "val_top1_after": best["val_top1"], "train_loss_before": loss_before, "train_loss_after": probe_loss(),
            "train_images": len(x), "steps_per_epoch": n_steps, "logit_scale": scale}


def cmd_finetune(args, quantize) -> dict:
    """``tvm-fxp finetune DIR --data fashion-mnist --epochs E --out DIR2``; ``quantize(argv)`` is
    ``tvm-fxp quantize`` (the CLI hands it in: what it writes is what DIR2 gets)."""
    import onnx

    from . import api
    from .datasets import TestSplitGuard, fashion_mnist

    t0 = time.time()
    d, out = Path(args.dir), Path(args.out)
    for f in ("plan.json", "source.onnx", "summary.json"):
        if not (d / f).exists():
            raise FinetuneError(f"{d / f} is missing: is {d} the --out directory of `tvm-fxp quantize`?")
    if args.data != "fashion-mnist":
        raise FinetuneError(f"--data {args.data!r}: finetune trains on labelled data; only 'fashion-mnist' "
                            "(training split to train, validation split to select) is supported")
    if args.epochs < 1:
        raise FinetuneError(f"--epochs must be >= 1, got {args.epochs}")
    prev = json.loads((d / "summary.json").read_text())
    plan = Plan.load(d / "plan.json")
    _, lg = api.load_model(d / "source.onnx", prev.get("input_shape"), False,
                           (prev.get("import") or {}).get("simplified", True))
    plan.bias_correction = {}      # biases are trained; a correction measured on the old weights is stale
    folded = fold_batchnorm(onnx.load(str(d / "source.onnx")))
    net = QuantNet(folded, lg, plan)
    out.mkdir(parents=True, exist_ok=True)
    lr = args.lr if args.lr is not None else default_lr(plan, lg)
    # Mellempudi's plans are re-derived by `quantize` from the trained weights (its activations: 8-bit, from range)
    refit = not args.keep_formats and plan.method != "mellempudi2017"
    with TestSplitGuard("fine-tuning"):
        train_data = fashion_mnist("train", limit=args.train_size)
        val_data = fashion_mnist("val", limit=args.val_size)
        float_val = evaluate(net, val_data.inputs, val_data.labels, quantized=False)
        print(f"fine-tuning {len(net.params)} weight/bias tensors of {plan.method} on {len(train_data)} images "
              f"({train_data.source}); selecting on {len(val_data)} ({val_data.source}); float validation top-1 "
              f"{float_val:.4f}", file=sys.stderr)
        # the teacher of the distillation: the float network handed in, frozen
        teacher = QuantNet(folded, lg, plan) if args.distill > 0 else None
        result = train(net, train_data, val_data, args.epochs, out, lr, args.train_batch, args.seed,
                       not args.quiet, args.steps_per_epoch, args.threads, refit, teacher, args.distill,
                       args.temperature, args.augment)
    model_path = out / "finetuned.onnx"
    net.export(model_path)
    # quantize the trained model with the same plan (Mellempudi: the clusters re-derived, same parameters)
    qargs = ["quantize", str(model_path), "--calib", "fashion-mnist", "--out", str(out),
             "--calib-size", str(prev.get("calibration", {}).get("inputs") or 500),
             "--accumulator", prev.get("accumulator_policy") or "proven", "--batch-size", str(args.batch_size)]
    if plan.method == "mellempudi2017":
        c = plan.config
        qargs += ["--method", "mellempudi2017", "--cluster", str(c["cluster"]), "--weights", c["weights"],
                  "--first-last-bits", str(c["first_last_bits"])]
    else:
        p = Plan(plan.tensors, plan.method, plan.config, {}, dict(plan.proofs), {})
        p.save(out / "finetune_plan.json")
        qargs += ["--plan", str(out / "finetune_plan.json")]
    if args.eval_size:
        qargs += ["--eval-size", str(args.eval_size)]
    if args.quiet:
        qargs.append("--quiet")
    summary = quantize(qargs)
    summary["finetune"] = {"from": str(d), "epochs": args.epochs, "lr": lr, "refit_activations": refit,
                           "distill": args.distill, "temperature": args.temperature, "seed": args.seed,
                           "augment": args.augment,
                           "batch": args.train_batch,
                           "float_val_top1": float_val, **result,
                           "test_top1_before": prev.get("fxp_top1"), "test_top1_after": summary["fxp_top1"],
                           "float_test_top1_before": prev.get("float_top1"), "float_test_top1_after": summary["float_top1"],
                           "wall_s": round(time.time() - t0, 1)}
    summary["wall_s"] = round(time.time() - t0, 2)
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    return summary


def add_finetune_parser(sub, common) -> None:
    f = sub.add_parser("finetune", parents=[common],
                       help="train the float weights with a quantized directory's formats in place (PyTorch)")
    f.add_argument("dir")
    f.add_argument("--data", default="fashion-mnist", help="fashion-mnist (train split trains, val split selects)")
    f.add_argument("--epochs", type=int, default=2)
    f.add_argument("--lr", type=float, default=None,
                   help="Adam's learning rate (cosine schedule); default 5e-4 when the median layer's weights are "
                        "<= 4 bits, else 1e-4")
    f.add_argument("--train-batch", type=int, default=128)
    f.add_argument("--keep-formats", action="store_true",
                   help="keep the plan's fracs (default: before training, re-derive each weight's and activation's "
                        "frac, i.e. its clipping point, same width, for least squared error)")
    f.add_argument("--distill", type=float, default=0.0,
                   help="weight a of the knowledge distillation from the float model handed in: loss = (1-a) CE + "
                        "a T^2 KL(teacher || student); 0 (default) trains on the labels alone")
    f.add_argument("--temperature", type=float, default=1.0, help="distillation temperature T (default 1)")
    f.add_argument("--augment", action="store_true",
                   help="random horizontal flips and 2-pixel crops of the training images (default: none)")
    f.add_argument("--train-size", type=int, default=None, help="train on the first N training images only")
    f.add_argument("--val-size", type=int, default=2000, help="validation images for model selection")
    f.add_argument("--steps-per-epoch", type=int, default=None, help="a shorter epoch (default: the whole split)")
    f.add_argument("--threads", type=int, default=None, help="PyTorch threads (default: its own)")
    f.add_argument("--out", required=True)
