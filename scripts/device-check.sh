#!/usr/bin/env bash
# One call on the lent GPU machine: build lowbit with CUDA for sm_90a, run the CUDA tests and the
# transformers + bitsandbytes interop proof, print the results. The device image has nvcc, CMake,
# ninja, torch and transformers but not lowbit's Debian libraries nor bitsandbytes: they travel in
# .deps/ (Debian .debs; bitsandbytes' wheel unpacked in .deps/py). See docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "$0")/.."
prefix=/tmp/lowbit-deps
mkdir -p "$prefix"
for deb in .deps/*.deb; do dpkg-deb -x "$deb" "$prefix"; done
export CMAKE_PREFIX_PATH="$prefix/usr"
export PKG_CONFIG_PATH="$prefix/usr/lib/x86_64-linux-gnu/pkgconfig:$prefix/usr/share/pkgconfig"
export LD_LIBRARY_PATH="$prefix/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}"
export CPATH="$prefix/usr/include"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
cmake -S . -B build-device -G Ninja -DCMAKE_BUILD_TYPE=Release -DLOWBIT_CUDA=ON \
  -DCMAKE_CUDA_ARCHITECTURES=90a -DGTest_DIR="$prefix/usr/lib/x86_64-linux-gnu/cmake/GTest" >/tmp/cmake.log 2>&1 \
  || { tail -40 /tmp/cmake.log; exit 1; }
cmake --build build-device -j "$(nproc)" --target lowbit lowbit_kernels_tests 2>&1 | tail -3
build-device/tests/lowbit_kernels_tests
if [ "${1:-}" = "interop" ]; then
  PYTHONPATH="$PWD/.deps/py" python3 tests/interop/bnb_transformers_check.py build-device/lowbit /tmp/interop 2>&1 | grep -v Warning
fi
