"""arm_tools.require: a missing aarch64 setup fails the run under CI=true and skips (with the reason) elsewhere."""

import subprocess
import sys

import pytest

from . import arm_tools

HERE = arm_tools.__file__.rsplit("/", 1)[0]


def test_require_skips_outside_ci_and_fails_in_ci(monkeypatch):
    arm_tools.require(None)                    # present: nothing happens, in or out of CI
    monkeypatch.setenv("CI", "false")
    with pytest.raises(pytest.skip.Exception, match="no emulator here"):
        arm_tools.require("no emulator here")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true but no emulator here"):
        arm_tools.require("no emulator here")


@pytest.mark.slow   # the rule itself is checked above in-process; this is the same through a whole pytest run
def test_a_missing_emulation_cache_fails_the_ci_run(tmp_path):
    """End to end (one pytest process, ~35 s of imports): the emulated tests with an empty emulation cache."""
    env = {"PATH": "/usr/bin:/bin", "TVM_FXP_ARM_CACHE": str(tmp_path / "absent"), "CI": "true", "HOME": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           f"{HERE}/test_arm_emulated.py", "-k", "dense_uint8_int32"],
                          env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 1, proc.stdout[-2000:]
    assert "CI=true but aarch64 emulation not set up" in proc.stdout and "skipped" not in proc.stdout
