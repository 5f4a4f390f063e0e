"""The 224x224 networks of the latency bench and the profile: ResNet-50, SqueezeNet 1.1 and MobileNetV2 as
published (1000 classes), generated with ``tests/onnx_graphs.py``'s architecture generators with random
He-initialised weights (nothing is downloaded; for latency the weights' values do not matter, only that a
uniform 8-bit plan of them is realized, built and checked bit-exact like any other).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import onnx  # noqa: E402

from onnx_graphs import Net, mobilenet_v2, resnet50, squeezenet  # noqa: E402

SIZE = 224
MODELS = {
    "resnet50_224": lambda g: resnet50(g, SIZE),
    "squeezenet_224": lambda g: squeezenet(g, SIZE, width=1.0, classes=1000),
    "mobilenetv2_224": lambda g: mobilenet_v2(g, SIZE),
}


def write_model(name: str, directory: Path) -> Path:
    """``directory/{name}.onnx`` (generated once; seed 0, opset 13, batch 1)."""
    path = Path(directory) / f"{name}.onnx"
    if not path.exists():
        g = Net([1, 3, SIZE, SIZE], seed=0, opset=13)
        onnx.save(g.model(MODELS[name](g)), str(path))
    return path


def images(n: int, seed: int = 0) -> np.ndarray:
    """``n`` synthetic images (standard normal, as an ImageNet-normalised input roughly is)."""
    return np.random.default_rng(seed).normal(0, 1, (n, 3, SIZE, SIZE)).astype(np.float32)
