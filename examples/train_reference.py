#!/usr/bin/env python3
"""Train the two small Fashion-MNIST reference CNNs and export them to ONNX.

This is the only part of tvm-fxp that needs PyTorch (``pip install
torch==2.13.0`` for the CPU build). It trains on the 55,000-image training
split (``tvm_fxp.datasets.fashion_mnist("train")``: the first 55,000 images of
Debian's ``dataset-fashion-mnist`` training file; the last 5,000 are the
validation split that searches use, never trained on), reports the accuracy on
the validation split and on the 10,000-image test split (no model selection on
either: the last epoch is exported), and writes, per model, into ``--out-dir``:

* ``<name>.onnx``: opset 17, input ``input`` float32 ``[N, 1, 28, 28]`` holding
  pixel/255 in [0, 1] (no mean/std normalisation anywhere), output ``logits``
  ``[N, 10]``; exported in eval mode with BatchNormalization nodes kept (not
  folded into the convolutions) and all weights as initializers;
* ``<name>.json``: accuracy (torch, and onnxruntime on the ONNX file itself
  over the full test split), MACs per image, parameter count, training setup.

Models:

* ``fmnist_vgg``: [conv3x3-BN-ReLU] x2 (16 ch), maxpool, [conv3x3-BN-ReLU] x2
  (32 ch), maxpool, flatten, Linear(1568, 128)-ReLU, Linear(128, 10).
  Convolutions carry a bias (like torchvision's VGG-BN).
* ``fmnist_resnet``: stem conv3x3-BN-ReLU (24 ch) + maxpool, an identity
  residual block (24 ch, 14x14), a downsampling block (24 -> 48 ch, stride 2,
  1x1 strided conv + BN on the skip), an identity block (48 ch, 7x7), global
  average pooling, flatten, Linear(48, 10). Convolutions have no bias
  (like torchvision's ResNet).

Usage:
  python examples/train_reference.py [--models fmnist_vgg,fmnist_resnet]
                                     [--epochs N] [--out-dir examples/models]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tvm_fxp.datasets import fashion_mnist  # noqa: E402

OPSET = 17
SEED = 20240601
BATCH = 128
THREADS = 2
DEFAULT_EPOCHS = {"fmnist_vgg": 20, "fmnist_resnet": 20}
MAX_LR = 3e-3
WEIGHT_DECAY = 1e-4


# --------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------


def conv_bn_relu(cin: int, cout: int, bias: bool) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=bias), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class FmnistVGG(nn.Module):
    def __init__(self, c1: int = 16, c2: int = 32, hidden: int = 128):
        super().__init__()
        self.features = nn.Sequential(
            *conv_bn_relu(1, c1, True),
            *conv_bn_relu(c1, c1, True),
            nn.MaxPool2d(2),
            *conv_bn_relu(c1, c2, True),
            *conv_bn_relu(c2, c2, True),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(c2 * 7 * 7, hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, 10),
        )

    def forward(self, x):
        return self.classifier(self.features(x))


class BasicBlock(nn.Module):
    """conv-BN-ReLU-conv-BN + skip, ReLU after the add. With stride 2 or a
    channel change the skip is a 1x1 strided conv + BN."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout)
            )
        else:
            self.downsample = None

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        skip = x if self.downsample is None else self.downsample(x)
        return F.relu(out + skip)


class FmnistResNet(nn.Module):
    def __init__(self, c1: int = 24, c2: int = 48):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(1, c1, 3, padding=1, bias=False),
            nn.BatchNorm2d(c1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),  # 28 -> 14
        )
        self.layer1 = BasicBlock(c1, c1)  # identity, 14x14
        self.layer2 = BasicBlock(c1, c2, stride=2)  # downsample, 7x7
        self.layer3 = BasicBlock(c2, c2)  # identity, 7x7
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(c2, 10)

    def forward(self, x):
        x = self.stem(x)
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(self.flatten(self.pool(x)))


MODELS = {"fmnist_vgg": FmnistVGG, "fmnist_resnet": FmnistResNet}


# --------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------


def count_macs(model: nn.Module) -> int:
    """Multiply-accumulates per image of the Conv2d and Linear layers."""
    total = 0

    def conv_hook(m, inp, out):
        nonlocal total
        kh, kw = m.kernel_size
        total += out[0].numel() * (m.in_channels // m.groups) * kh * kw

    def linear_hook(m, inp, out):
        nonlocal total
        total += m.in_features * m.out_features

    hooks = []
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            hooks.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            hooks.append(m.register_forward_hook(linear_hook))
    was_training = model.training
    model.eval()
    with torch.no_grad():
        model(torch.zeros(1, 1, 28, 28))
    model.train(was_training)
    for h in hooks:
        h.remove()
    return int(total)


def augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random horizontal flip and random crop with 2-pixel zero padding."""
    n = x.shape[0]
    flip = torch.rand(n, generator=gen) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(3), x)
    padded = F.pad(x, (2, 2, 2, 2))
    dy = torch.randint(0, 5, (n,), generator=gen)
    dx = torch.randint(0, 5, (n,), generator=gen)
    rows = (dy[:, None] + torch.arange(28)[None, :])  # n, 28
    cols = (dx[:, None] + torch.arange(28)[None, :])
    idx_n = torch.arange(n)[:, None, None]
    return padded[idx_n, 0, rows[:, :, None], cols[:, None, :]][:, None]


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    correct = 0
    for i in range(0, x.shape[0], 1000):
        correct += (model(x[i : i + 1000]).argmax(1) == y[i : i + 1000]).sum().item()
    return correct / x.shape[0]


def train(name: str, epochs: int, train_x, train_y, val_x, val_y, seed: int):
    torch.manual_seed(seed)
    np.random.seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = MODELS[name]()
    opt = torch.optim.Adam(model.parameters(), lr=MAX_LR, weight_decay=WEIGHT_DECAY)
    steps_per_epoch = math.ceil(train_x.shape[0] / BATCH)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=MAX_LR, epochs=epochs, steps_per_epoch=steps_per_epoch, pct_start=0.2
    )
    t0 = time.time()
    for epoch in range(epochs):
        model.train()
        perm = torch.randperm(train_x.shape[0], generator=gen)
        loss_sum, correct = 0.0, 0
        for i in range(0, train_x.shape[0], BATCH):
            idx = perm[i : i + BATCH]
            xb, yb = augment(train_x[idx], gen), train_y[idx]
            logits = model(xb)
            loss = F.cross_entropy(logits, yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            loss_sum += loss.item() * idx.numel()
            correct += (logits.argmax(1) == yb).sum().item()
        # Validation accuracy is printed for information only; the last epoch is kept.
        acc = evaluate(model, val_x, val_y)
        print(
            f"[{name}] epoch {epoch + 1}/{epochs}: train loss {loss_sum / train_x.shape[0]:.4f} "
            f"train acc {correct / train_x.shape[0]:.4f} val acc {acc:.4f} "
            f"({time.time() - t0:.0f}s)",
            flush=True,
        )
    train_seconds = time.time() - t0
    model.eval()
    return model, train_seconds


def export_onnx(model: nn.Module, path: Path) -> None:
    model.eval()
    dummy = torch.zeros(1, 1, 28, 28)
    with warnings.catch_warnings():
        # "You are using the legacy TorchScript-based ONNX export": deliberate.
        warnings.simplefilter("ignore", DeprecationWarning)
        _export(model, dummy, path)
    _inline_identity_initializers(path)


def _export(model: nn.Module, dummy: torch.Tensor, path: Path) -> None:
    torch.onnx.export(
        model,
        (dummy,),
        str(path),
        dynamo=False,  # TorchScript exporter: no onnxscript needed, keeps BN nodes
        export_params=True,
        keep_initializers_as_inputs=False,
        opset_version=OPSET,
        input_names=["input"],
        output_names=["logits"],
        dynamic_axes={"input": {0: "N"}, "logits": {0: "N"}},
        # PRESERVE (with the model in eval mode) skips the exporter's eval-mode
        # Conv+BN fusion, so BatchNormalization nodes stay in the graph for
        # tvm-fxp's own folding pass; constant folding off for the same reason.
        training=torch.onnx.TrainingMode.PRESERVE,
        do_constant_folding=False,
    )


def _inline_identity_initializers(path: Path) -> None:
    """Replace ``Identity(initializer)`` nodes by a copy of the initializer.

    The TorchScript exporter deduplicates bit-identical parameters and feeds
    the duplicates through Identity nodes. In the ResNet the BN bias after the
    second conv of the downsampling block and the BN bias on its 1x1 skip get
    identical gradients (both are added just before the ReLU), so they stay
    equal and one of them would reach its BatchNormalization only through an
    Identity node. Give every BN/Conv/Gemm its own plain initializer instead.
    """
    import onnx

    m = onnx.load(str(path))
    inits = {t.name: t for t in m.graph.initializer}
    keep = []
    for node in m.graph.node:
        if node.op_type == "Identity" and node.input[0] in inits:
            copy = onnx.TensorProto()
            copy.CopyFrom(inits[node.input[0]])
            copy.name = node.output[0]
            m.graph.initializer.append(copy)
            inits[copy.name] = copy
        else:
            keep.append(node)
    if len(keep) != len(m.graph.node):
        del m.graph.node[:]
        m.graph.node.extend(keep)
        onnx.save(m, str(path))


def check_onnx(path: Path, model: nn.Module, test_x: np.ndarray, test_y: np.ndarray) -> dict:
    import onnx
    import onnxruntime as ort

    m = onnx.load(str(path))
    onnx.checker.check_model(m, full_check=True)
    ops = sorted({n.op_type for n in m.graph.node})
    n_bn_onnx = sum(n.op_type == "BatchNormalization" for n in m.graph.node)
    n_bn_torch = sum(isinstance(x, nn.BatchNorm2d) for x in model.modules())
    if n_bn_onnx != n_bn_torch:
        raise RuntimeError(f"{path}: {n_bn_onnx} BatchNormalization nodes, model has {n_bn_torch} BN layers")
    inputs = [i.name for i in m.graph.input]
    if inputs != ["input"]:
        raise RuntimeError(f"{path}: graph inputs are {inputs}, expected only 'input' (weights must be initializers)")
    outputs = [o.name for o in m.graph.output]
    if outputs != ["logits"]:
        raise RuntimeError(f"{path}: graph outputs are {outputs}")
    dims = [d.dim_param or d.dim_value for d in m.graph.input[0].type.tensor_type.shape.dim]
    if dims != ["N", 1, 28, 28]:
        raise RuntimeError(f"{path}: input shape {dims}")
    if "Identity" in ops:
        raise RuntimeError(f"{path}: Identity nodes left in the graph")
    if m.opset_import[0].version != OPSET:
        raise RuntimeError(f"{path}: opset {m.opset_import[0].version}")

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    correct, max_diff = 0, 0.0
    with torch.no_grad():
        for i in range(0, test_x.shape[0], 1000):
            xb = test_x[i : i + 1000]
            logits = sess.run(["logits"], {"input": xb})[0]
            ref = model(torch.from_numpy(xb)).numpy()
            max_diff = max(max_diff, float(np.abs(logits - ref).max()))
            correct += int((logits.argmax(1) == test_y[i : i + 1000]).sum())
    return {
        "ops": ops,
        "n_batchnorm": n_bn_onnx,
        "ort_top1": correct / test_x.shape[0],
        "max_abs_diff_vs_torch": max_diff,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description="Train and export the Fashion-MNIST reference CNNs.")
    ap.add_argument("--models", default=",".join(MODELS), help=f"comma-separated subset of {list(MODELS)}")
    ap.add_argument("--epochs", type=int, default=None, help=f"epochs per model (default {DEFAULT_EPOCHS})")
    ap.add_argument("--out-dir", type=Path, default=ROOT / "examples" / "models")
    ap.add_argument("--seed", type=int, default=SEED)
    args = ap.parse_args()

    names = [n.strip() for n in args.models.split(",") if n.strip()]
    unknown = [n for n in names if n not in MODELS]
    if unknown or not names:
        ap.error(f"unknown model(s) {unknown}; choose from {list(MODELS)}")
    if args.epochs is not None and args.epochs < 1:
        ap.error("--epochs must be >= 1")

    torch.set_num_threads(THREADS)
    train_ds = fashion_mnist("train")
    val_ds = fashion_mnist("val")
    test_ds = fashion_mnist("test")
    if len(train_ds) != 55000 or len(val_ds) != 5000 or len(test_ds) != 10000:
        print(
            f"error: need the full Fashion-MNIST splits (got: {train_ds.source}; {val_ds.source}; "
            f"{test_ds.source}); run `apt-get install dataset-fashion-mnist`",
            file=sys.stderr,
        )
        return 1
    print(f"train: {train_ds.source}\nval: {val_ds.source}\ntest: {test_ds.source}", flush=True)
    train_x, train_y = torch.from_numpy(train_ds.inputs), torch.from_numpy(train_ds.labels)
    val_x, val_y = torch.from_numpy(val_ds.inputs), torch.from_numpy(val_ds.labels)
    test_x, test_y = torch.from_numpy(test_ds.inputs), torch.from_numpy(test_ds.labels)

    args.out_dir.mkdir(parents=True, exist_ok=True)
    for name in names:
        epochs = args.epochs if args.epochs is not None else DEFAULT_EPOCHS[name]
        probe = MODELS[name]()
        macs = count_macs(probe)
        params = sum(p.numel() for p in probe.parameters())
        print(f"[{name}] {macs:,} MACs/image, {params:,} parameters, {epochs} epochs", flush=True)
        del probe

        model, train_seconds = train(name, epochs, train_x, train_y, val_x, val_y, args.seed)
        torch_top1 = evaluate(model, test_x, test_y)
        val_top1 = evaluate(model, val_x, val_y)

        onnx_path = args.out_dir / f"{name}.onnx"
        export_onnx(model, onnx_path)
        chk = check_onnx(onnx_path, model, test_ds.inputs, test_ds.labels)
        info = {
            "name": name,
            "float_test_top1": chk["ort_top1"],
            "torch_test_top1": torch_top1,
            "float_val_top1": val_top1,
            "macs_per_image": macs,
            "params": params,
            "epochs": epochs,
            "seed": args.seed,
            "train_seconds": round(train_seconds, 1),
            "torch_version": torch.__version__,
            "opset": OPSET,
            "input_name": "input",
            "input_shape": ["N", 1, 28, 28],
            "input_scaling": "pixel / 255 in [0, 1], no mean/std normalisation",
            "output_name": "logits",
            "onnx_ops": chk["ops"],
            "batchnorm_nodes": chk["n_batchnorm"],
            "max_abs_logit_diff_onnxruntime_vs_torch": chk["max_abs_diff_vs_torch"],
            "data_source": {
                "train": train_ds.source,
                "val": val_ds.source + " (not trained on)",
                "test": test_ds.source,
                "license": "Fashion-MNIST, MIT license, Copyright (c) 2017 Zalando SE",
            },
            "training": {
                "optimizer": "Adam",
                "max_lr": MAX_LR,
                "weight_decay": WEIGHT_DECAY,
                "schedule": "OneCycleLR (pct_start 0.2)",
                "batch_size": BATCH,
                "augmentation": "random horizontal flip, random crop 28x28 from 2-pixel zero padding",
                "threads": THREADS,
            },
        }
        json_path = args.out_dir / f"{name}.json"
        json_path.write_text(json.dumps(info, indent=2) + "\n")
        print(
            f"[{name}] torch top1 {torch_top1:.4f}, onnxruntime top1 {chk['ort_top1']:.4f} "
            f"(max |diff| {chk['max_abs_diff_vs_torch']:.2e}), {train_seconds:.0f}s training; "
            f"ops {chk['ops']}; wrote {onnx_path} ({onnx_path.stat().st_size} bytes), {json_path}",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
