#!/usr/bin/env bash
# Set up cross-compilation to aarch64 (Raspberry Pi 4 / Cortex-A72) and its emulation, idempotently.
#
# Installs (Debian, as root): g++-aarch64-linux-gnu, qemu-user-static, binfmt-support, llvm-19 (for
# llvm-mca-19), file. Then builds, in a cache directory OUTSIDE the repository (default
# ~/.cache/tvm-fxp-arm, override with TVM_FXP_ARM_CACHE), an aarch64 Python 3.11 sysroot (Debian arm64
# packages unpacked with dpkg-deb, nothing installed) and a site folder with the aarch64 wheels of the TVM
# runtime and numpy. tests/schedules/ and bench/arm_static.py find it there; without it the emulation tests
# skip and say so. See /work/shared/ARM.md for what was verified and why each step is needed.
#
# Usage: bash .ci/setup_arm.sh     (about 2 minutes and ~125 MB of downloads the first time; seconds after)
set -euo pipefail
cd "$(dirname "$0")/.."

CACHE=${TVM_FXP_ARM_CACHE:-$HOME/.cache/tvm-fxp-arm}
SYSROOT=$CACHE/sysroot
SITE=$CACHE/site
STAMP=$CACHE/ready
PY=${PYTHON:-.venv/bin/python}
TVM_VERSION=$("$PY" -c 'import importlib.metadata as m; print(m.version("apache-tvm"))')
FFI_VERSION=$("$PY" -c 'import importlib.metadata as m; print(m.version("apache-tvm-ffi"))')
WANT="tvm=$TVM_VERSION ffi=$FFI_VERSION py=3.11"

# ---- 1. host toolchain (cross compiler, emulator, llvm-mca-19)
need=()
command -v aarch64-linux-gnu-g++ >/dev/null || need+=(g++-aarch64-linux-gnu)
command -v arm-linux-gnueabihf-g++ >/dev/null || need+=(g++-arm-linux-gnueabihf)   # the rpi3 (armv7) preset
command -v qemu-aarch64-static >/dev/null || need+=(qemu-user-static binfmt-support)
command -v llvm-mca-19 >/dev/null || need+=(llvm-19)
command -v file >/dev/null || need+=(file)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "setup_arm: need root to apt-get install ${need[*]}" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null \
    || { apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null; }
fi

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ]; then
  echo "setup_arm: $CACHE is ready ($WANT)"
  exit 0
fi

# ---- 2. aarch64 Python sysroot: Debian arm64 packages unpacked, not installed
mkdir -p "$CACHE"
if ! dpkg --print-foreign-architectures | grep -qx arm64; then
  dpkg --add-architecture arm64
  apt-get update -q >/dev/null
fi
debs=$CACHE/debs
rm -rf "$debs" "$SYSROOT" "$SITE"
mkdir -p "$debs" "$SYSROOT" "$SITE"
pkgs=(python3.11-minimal libpython3.11-minimal libpython3.11-stdlib libc6 libstdc++6 libgcc-s1 libexpat1
      zlib1g libffi8 libssl3 libbz2-1.0 liblzma5 libuuid1 libncursesw6 libtinfo6 libreadline8 libsqlite3-0
      libcrypt1 libnsl2 libtirpc3 libdb5.3 libgomp1)
(cd "$debs" && apt-get download -q "${pkgs[@]/%/:arm64}" >/dev/null 2>&1) \
  || { apt-get update -q >/dev/null && (cd "$debs" && apt-get download -q "${pkgs[@]/%/:arm64}" >/dev/null); }
for d in "$debs"/*.deb; do dpkg-deb -x "$d" "$SYSROOT"; done
rm -rf "$debs"

# ---- 3. aarch64 wheels (manylinux_2_28), unzipped into one site folder; TVM runtime only
whl=$CACHE/wheels
rm -rf "$whl" && mkdir -p "$whl"
"$PY" -m pip download -q --no-deps --dest "$whl" --platform manylinux_2_28_aarch64 --python-version 3.11 \
  --only-binary=:all: "apache-tvm==$TVM_VERSION" "apache-tvm-ffi==$FFI_VERSION" numpy typing_extensions \
  ml_dtypes cloudpickle psutil
for w in "$whl"/*.whl; do "$PY" -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])' "$w" "$SITE"; done
rm -rf "$whl"
rm -f "$SITE/tvm/lib/libtvm_compiler.so"   # 248 MB; the runtime (libtvm_runtime.so) is enough to run modules

# ---- 4. smoke test: the emulated Python imports the TVM runtime
QEMU_LD_PREFIX=$SYSROOT PYTHONPATH=$SITE TVM_USE_RUNTIME_LIB=1 \
  qemu-aarch64-static "$SYSROOT/usr/bin/python3.11" -c 'import tvm, numpy, platform; assert platform.machine() == "aarch64"; print("setup_arm: emulated", platform.machine(), "tvm", tvm.__version__, "numpy", numpy.__version__)'
echo "$WANT" > "$STAMP"
echo "setup_arm: ready in $CACHE"
