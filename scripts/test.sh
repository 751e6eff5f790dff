#!/usr/bin/env bash
# Builds lowbit and runs the whole test suite: a short fuzzing smoke run of each parser, then every
# GoogleTest test through ctest. CUDA code is compiled when nvcc is present; its tests skip without a GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-debian.sh
jobs=$(nproc)
# Independent checkers from PyPI (llama.cpp's gguf-py), in a virtual environment of the build's own.
if [ ! -x build/venv/bin/python ] || ! build/venv/bin/python -c 'import gguf' 2>/dev/null; then
  python3 -m venv build/venv
  build/venv/bin/pip install --quiet --disable-pip-version-check gguf==0.19.0
fi
export LOWBIT_PYTHON="$PWD/build/venv/bin/python" LOWBIT_REQUIRE_INTEROP=1
# The default model (fetched once into the cache): tokenizer tests compare with llama.cpp's ids on it.
LOWBIT_DEFAULT_MODEL=$(scripts/fetch-default-model.sh)
export LOWBIT_DEFAULT_MODEL
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release
cmake --build build -j "$jobs"
scripts/fuzz.sh "${LOWBIT_FUZZ_SECONDS:-30}"
ctest --test-dir build --output-on-failure -j "$jobs"
