#!/usr/bin/env bash
# llama.cpp's CUDA tools (llama-bench, llama-perplexity), the references of scripts/device-speed.sh, built
# on the lent GPU machine itself: its 16 cores take a few minutes where this machine's 2 take about an hour
# (LLAMA_CUDA=1 scripts/device-deps.sh). Two steps:
#   here:   LLAMA_SOURCE=1 scripts/device-deps.sh .devllama   (the llama.cpp of scripts/llama-cpp-tools.sh,
#           trimmed to what the CUDA build reads: .devllama/llama-src.tar.xz, about 7 MB)
#   device: scripts/device-llama-build.sh   (carry [".devllama"]); the tools and their libraries come back
#           under $OUT as llama-cuda.tar.xz split in parts of at most 15 MB (the device's limit per file):
#           cat them into .devllama/llama-cuda.tar.xz, which scripts/device-check.sh unpacks. They also stay
#           unpacked in $LLAMA_TOOLS (default /tmp/llama-cuda) for the rest of the call.
set -euo pipefail
cd "$(dirname "$0")/.."
src=$(mktemp -d) build=$(mktemp -d)
pack=${LLAMA_TOOLS:-/tmp/llama-cuda}  # the tools, unpacked, for the rest of the same call (device-speed.sh's LLAMA_CPP_BIN)
mkdir -p "$pack"
tar -xJf .devllama/llama-src.tar.xz -C "$src"
cmake -S "$src" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DGGML_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 \
  -DGGML_CUDA_FA=OFF -DGGML_NATIVE=OFF -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF \
  -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF -DBUILD_SHARED_LIBS=ON > "$build/configure.log"
cmake --build "$build" -j "$(nproc)" --target llama-bench llama-perplexity > "$build/build.log" 2>&1 ||
  { tail -30 "$build/build.log"; exit 1; }
cp "$build"/bin/llama-bench "$build"/bin/llama-perplexity "$pack/"
cp "$build"/bin/libllama-*-impl.so "$pack/" 2>/dev/null || true
for lib in libggml-base libggml-cpu libggml-cuda libggml libllama libllama-common; do
  [ -e "$build/bin/$lib.so.0" ] && cp -L "$build/bin/$lib.so.0" "$pack/"
done
strip --strip-unneeded "$pack"/*
ls -la "$pack"
tar -cJf "$build/llama-cuda.tar.xz" -C "$pack" .
split -b 15M -d "$build/llama-cuda.tar.xz" "${OUT:-.devllama}/llama-cuda.tar.xz.part"
ls -la "${OUT:-.devllama}"
