"""What the aarch64 tests need, and what happens when it is missing.

Outside CI a test that needs the emulated aarch64 setup (``bash .ci/setup_arm.sh``) or ``llvm-mca-19`` is
skipped with the reason.  In CI (``CI=true``, as GitHub Actions and most CI systems set it) it FAILS: a
broken emulation setup must not turn the aarch64 checks into silent skips.
"""

from __future__ import annotations

import os

import pytest

from tools import arm_emulation
from tools.asm import mca_tool

EMULATOR, EMULATOR_MISSING = arm_emulation.find()
MCA_MISSING = None if mca_tool() is not None else "llvm-mca-19 not installed (run bash .ci/setup_arm.sh)"


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def require(missing: str | None) -> None:
    """Nothing when ``missing`` is None; else fail under ``CI=true``, skip (with the reason) otherwise."""
    if missing is None:
        return
    if in_ci():
        pytest.fail(f"CI=true but {missing}", pytrace=False)
    pytest.skip(missing)


def require_emulator() -> arm_emulation.Emulator:
    require(EMULATOR_MISSING)
    return EMULATOR


def require_mca() -> None:
    require(MCA_MISSING)
