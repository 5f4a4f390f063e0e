#!/usr/bin/env bash
# Set up tvm-fxp for development: Debian data set (when root), a venv in .venv, the package editable + tests +
# the `train` extra (PyTorch, CPU: `tvm-fxp finetune` and its test).
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
"$PY" -c 'import sys; assert sys.version_info >= (3, 11), "tvm-fxp needs Python >= 3.11"'

# Full Fashion-MNIST (Debian dataset-fashion-mnist). Without root the bundled subset in tvm_fxp/data is used.
if [ ! -d /usr/share/datasets/fashion-mnist ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 \
      || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1; } \
      || echo "setup: could not install dataset-fashion-mnist; tests and the main job use the bundled subset" >&2
  else
    echo "setup: not root; using the bundled Fashion-MNIST subset (sudo apt-get install dataset-fashion-mnist for the full set)" >&2
  fi
fi

[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
.venv/bin/python -m pip install -q -e ".[test,train]"
.venv/bin/python -c "import tvm, tvm_ffi, tvm_fxp; assert tvm_ffi.__version__ == '0.1.14.post1', tvm_ffi.__version__"

# aarch64 cross toolchain + emulation (qemu-user, an aarch64 Python sysroot, llvm-mca-19) for the kernel tests.
# In CI (CI=true) it is required: a failed setup fails the run (and the aarch64 tests fail rather than skip).
# Elsewhere it is attempted as root; without it the emulated and llvm-mca tests skip and say why.
case "${CI:-}" in
  true|TRUE|True|1|yes)
    bash .ci/setup_arm.sh || { echo "setup: CI=true and the aarch64 emulation setup failed (see above)" >&2; exit 1; } ;;
  *)
    if [ "$(id -u)" = 0 ]; then
      bash .ci/setup_arm.sh || echo "setup: aarch64 emulation unavailable; the emulated tests skip and say why" >&2
    fi ;;
esac
