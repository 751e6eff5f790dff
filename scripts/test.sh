#!/usr/bin/env bash
# Builds lowbit and runs the whole test suite: a short fuzzing smoke run of each parser, then every
# GoogleTest test through ctest. CUDA code is compiled when nvcc is present; its tests skip without a GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-debian.sh
jobs=$(nproc)
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release
cmake --build build -j "$jobs"
scripts/fuzz.sh "${LOWBIT_FUZZ_SECONDS:-30}"
ctest --test-dir build --output-on-failure -j "$jobs"
