#!/usr/bin/env bash
# One call on the lent GPU machine: build lowbit with CUDA for sm_90a, run the CUDA tests and the
# transformers + bitsandbytes interop proof, print the results. The device image has nvcc, CMake,
# ninja, torch and transformers but not lowbit's Debian libraries nor bitsandbytes: they travel in
# .deps/ (Debian .debs; bitsandbytes' wheel unpacked in .deps/py). See docs/benchmarks.md.
#   scripts/device-check.sh           build, CUDA tests
#   scripts/device-check.sh interop   + the transformers/bitsandbytes interop proofs (uniform and planned checkpoints)
#   scripts/device-check.sh bench     + the GPU benchmarks (lowbit_cuda_bench: codecs and matmuls), then
#                                     bitsandbytes timed the same way (bench/bnb_reference_bench.py);
#                                     tables also in $OUT/cuda_bench.md and $OUT/bnb_bench.md when $OUT is set
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
targets="lowbit lowbit_kernels_tests"
[ "${1:-}" = "bench" ] && targets="lowbit lowbit_kernels_tests lowbit_cuda_bench"
cmake --build build-device -j "$(nproc)" --target $targets 2>&1 | tail -3
if [ "${1:-}" = "bench" ]; then
  # The table is wanted even when a check fails; the exit status still reports the failure.
  tests_status=0
  build-device/tests/lowbit_kernels_tests --gtest_brief=1 || tests_status=$?
  build-device/bench/lowbit_cuda_bench | tee "${OUT:-/tmp}/cuda_bench.md"
  # The CLI's form of the same benchmarks (a smoke run of its JSON).
  build-device/lowbit bench --device cuda --quick --json > "${OUT:-/tmp}/cli_bench.json" || tests_status=$?
  python3 -c 'import json,sys; j=json.load(open(sys.argv[1])); print("lowbit bench --device cuda --quick --json:", len(j["rows"]), "rows on", j["device"])' "${OUT:-/tmp}/cli_bench.json" || tests_status=1
  PYTHONPATH="$PWD/.deps/py" python3 bench/bnb_reference_bench.py --graph 2>&1 | grep -v Warning | tee "${OUT:-/tmp}/bnb_bench.md" || true
  exit "$tests_status"
fi
build-device/tests/lowbit_kernels_tests
if [ "${1:-}" = "interop" ]; then
  PYTHONPATH="$PWD/.deps/py" python3 tests/interop/bnb_transformers_check.py build-device/lowbit /tmp/interop 2>&1 | grep -v Warning
  PYTHONPATH="$PWD/.deps/py" python3 tests/interop/bnb_plan_transformers_check.py build-device/lowbit /tmp/interop-plan 2>&1 | grep -v Warning
fi
