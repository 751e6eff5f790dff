#!/usr/bin/env bash
# Proof with llama.cpp itself: builds llama-cpp-python from PyPI (outside the repo, in
# build/llama-venv; about 10 minutes on 2 cores, so not part of CI), converts the default model with
# lowbit to several GGUF types and mixes, and has llama.cpp load each and generate.
# AVX-512/AMX are left out of the llama.cpp build: its AMX path crashed on this virtual machine.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${LLAMA_VENV:-build/llama-venv}  # LLAMA_VENV: reuse a virtual environment that has llama-cpp-python
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import llama_cpp' 2>/dev/null; then
  python3 -m venv "$venv"
  CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=OFF -DGGML_AMX_INT8=OFF -DGGML_OPENMP=OFF" \
    "$venv/bin/pip" install --quiet llama-cpp-python==0.3.36
fi
model=$(scripts/fetch-default-model.sh)
out=build/llama-check
mkdir -p "$out"
files=("$model")
build/lowbit dequantize "$model" -o "$out/smollm2-f16.gguf" --dtype f16 --quiet
files+=("$out/smollm2-f16.gguf")
for spec in "--format q8_0" "--format q4_0" "--mix Q4_K_M" "--mix Q2_K" "--format iq4_nl"; do
  name=$(echo "$spec" | tr -d ' -' | tr '[:upper:]' '[:lower:]')
  build/lowbit quantize "$model" -o "$out/smollm2-$name.gguf" $spec --quiet
  files+=("$out/smollm2-$name.gguf")
done
"$venv/bin/python" tests/interop/llama_cpp_generate.py "${files[@]}"
