"""Run cross-compiled aarch64 modules on this machine: qemu-user and an aarch64 Python with the TVM runtime.

``.ci/setup_arm.sh`` prepares the cache (default ``~/.cache/tvm-fxp-arm``, or ``$TVM_FXP_ARM_CACHE``): a
sysroot of Debian arm64 packages with Python 3.11, and a site folder with the aarch64 wheels of TVM (runtime
only) and numpy.  ``find()`` says whether it is there (and if not, why); ``Emulator.run_python`` runs a
script under ``qemu-aarch64-static``.  Start-up costs ~5 s, so callers batch many checks per process.
Timings under qemu mean nothing; only results are compared.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

CROSS_CXX = "aarch64-linux-gnu-g++"


def cache_dir() -> Path:
    return Path(os.environ.get("TVM_FXP_ARM_CACHE", Path.home() / ".cache" / "tvm-fxp-arm"))


@dataclass(frozen=True)
class Emulator:
    qemu: str
    sysroot: Path
    site: Path

    @property
    def python(self) -> Path:
        return self.sysroot / "usr" / "bin" / "python3.11"

    def run_python(self, script: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
        """Run ``script`` with the emulated aarch64 Python (TVM runtime-only); raises on failure."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "TVM_"))}
        env.update(QEMU_LD_PREFIX=str(self.sysroot), PYTHONPATH=str(self.site), TVM_USE_RUNTIME_LIB="1",
                   PYTHONNOUSERSITE="1", TVM_NUM_THREADS="1")
        proc = subprocess.run([self.qemu, "-L", str(self.sysroot), str(self.python), str(script), *args],
                              env=env, capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0:
            raise RuntimeError(f"emulated run of {script.name} failed ({proc.returncode}):\n"
                               f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
        return proc


def find() -> tuple:
    """``(Emulator, None)`` when the emulation setup is complete, else ``(None, reason)``."""
    cache = cache_dir()
    qemu = shutil.which("qemu-aarch64-static")
    missing = []
    if qemu is None:
        missing.append("qemu-aarch64-static")
    if shutil.which(CROSS_CXX) is None:
        missing.append(CROSS_CXX)
    if not (cache / "ready").is_file():
        missing.append(f"the aarch64 Python sysroot in {cache}")
    if missing:
        return None, f"aarch64 emulation not set up (missing {', '.join(missing)}): run bash .ci/setup_arm.sh"
    return Emulator(qemu, cache / "sysroot", cache / "site"), None


def cross_compiler():
    """A fresh ``fcompile`` for ``export_library`` (TVM's appends options in place: never reuse one)."""
    from tvm.support import cc

    return cc.cross_compiler(CROSS_CXX)
