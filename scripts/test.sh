#!/usr/bin/env bash
# Builds lowbit and runs the whole test suite: a short fuzzing smoke run of each parser, then every
# GoogleTest test through ctest. CUDA code is compiled when nvcc is present; its tests skip without a GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-debian.sh
jobs=$(nproc)
# Independent checkers (gguf-py, transformers, bitsandbytes, PEFT) and the Python package's tools, from
# PyPI into a virtual environment of the build's own, installed once (scripts/test-requirements.txt).
if [ ! -x build/venv/bin/python ] || ! build/venv/bin/python -c 'import gguf, torch, transformers, bitsandbytes, accelerate, peft, nanobind, scikit_build_core, pytest' 2>/dev/null; then
  [ -x build/venv/bin/python ] || python3 -m venv build/venv
  build/venv/bin/pip install --quiet --disable-pip-version-check -r scripts/test-requirements.txt
fi
export LOWBIT_PYTHON="$PWD/build/venv/bin/python" LOWBIT_REQUIRE_INTEROP=1
# The default model (fetched once into the cache): tokenizer tests compare with llama.cpp's ids on it.
LOWBIT_DEFAULT_MODEL=$(scripts/fetch-default-model.sh)
export LOWBIT_DEFAULT_MODEL
# llama.cpp's own tools, built once outside lowbit's build: the consumer tests run lowbit's files through them.
LOWBIT_LLAMA_CPP_BIN=$(scripts/llama-cpp-tools.sh)
export LOWBIT_LLAMA_CPP_BIN
# ccache (scripts/setup-debian.sh installs it) lets the wheel below reuse this build's compilations.
launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache -DCMAKE_CUDA_COMPILER_LAUNCHER=ccache)
command -v ccache >/dev/null || launcher=()
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DLOWBIT_PYTHON=ON -DPython_EXECUTABLE="$PWD/build/venv/bin/python" "${launcher[@]}"
cmake --build build -j "$jobs"
# The Python package as pip builds it (pyproject.toml, scikit-build-core from build/venv, nothing downloaded),
# with the same compiler, in a build directory as deep as build/ (ccache sees the same command lines), so
# ccache serves the library's objects (about 30 s); python/tests/test_wheel.py installs it into a fresh venv.
cxx=$(sed -n 's/^CMAKE_CXX_COMPILER:[A-Z]*=//p' build/CMakeCache.txt)
rm -rf build/wheel
CMAKE_ARGS="${launcher[*]} -DCMAKE_CXX_COMPILER=$cxx" \
  build/venv/bin/python -m pip wheel . --no-build-isolation --no-deps --quiet --disable-pip-version-check -w build/wheel \
  --config-settings=build-dir=build-wheel
LOWBIT_WHEEL=$(ls build/wheel/lowbit-*.whl)
export LOWBIT_WHEEL
scripts/fuzz.sh "${LOWBIT_FUZZ_SECONDS:-}"  # each target its default: 30 s for the containers, 15 s for side files
# The Python package (built above into build/python) under pytest, then every C++ test.
PYTHONPATH="$PWD/build/python" build/venv/bin/python -m pytest -q python/tests
ctest --test-dir build --output-on-failure -j "$jobs"
