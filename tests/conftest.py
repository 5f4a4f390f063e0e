import os
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "examples" / "models"
sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(ROOT))    # tools/: the assembly and emulation tooling the tests use (not installed)


def model_path(name: str) -> Path:
    p = MODELS / f"{name}.onnx"
    if not p.exists():
        pytest.fail(f"reference model {p} is missing; run examples/train_reference.py")
    return p


@pytest.fixture(scope="session")
def test_images():
    from tvm_fxp.datasets import fashion_mnist

    return fashion_mnist("test", limit=2000)


@pytest.fixture(scope="session")
def calib_images():
    from tvm_fxp.datasets import fashion_mnist

    return fashion_mnist("train", limit=256).inputs


@pytest.fixture
def rng():
    return np.random.default_rng(1234)
