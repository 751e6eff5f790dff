#!/usr/bin/env bash
# Assembles what must travel to the lent GPU machine, whose image has nvcc, CMake, ninja, torch and
# transformers but none of lowbit's Debian libraries: their .debs (downloaded here with apt-get, unpacked
# there by scripts/device-check.sh), and optionally bitsandbytes' wheel unpacked into DEST/py.
#   scripts/device-deps.sh [DEST]            default DEST: .deps (ignored; name it in the device call's carry)
#   BNB_WHEEL=1 scripts/device-deps.sh       also bitsandbytes 0.50.2 (its CUDA-13 library only)
#   PY_WHEELS=1 scripts/device-deps.sh       also nanobind and pytest (the Python package's build and tests)
#   LORA_WHEELS=1 scripts/device-deps.sh     also PEFT, accelerate and bitsandbytes with its CPU library (the
#                                            QLoRA proof, scripts/lora-proof.sh, trains on the device's 16 cores)
#   LLAMA_CUDA=1 scripts/device-deps.sh      also llama.cpp's CUDA tools (llama-perplexity, llama-bench and their
#                                            libraries) packed in DEST/llama-cuda.tar.xz (DEST .devllama: it
#                                            travels apart from the model data), the references of scripts/device-speed.sh:
#                                            the llama.cpp of scripts/llama-cpp-tools.sh built here for sm_90 only, with
#                                            GGML_CUDA_FA=OFF (its flash-attention kernels would double the build:
#                                            about an hour on 2 cores as it is), in $LLAMA_CUDA_BUILD
#   LLAMA_SOURCE=1 scripts/device-deps.sh .devllama   instead the same llama.cpp's source, trimmed to what its
#                                            CUDA build reads (DEST/llama-src.tar.xz, about 7 MB), for
#                                            scripts/device-llama-build.sh to build on the device in minutes
set -euo pipefail
dest="${1:-.deps}"
mkdir -p "$dest"
dest="$(cd "$dest" && pwd)"
# The -dev packages CMake finds, and the shared libraries they link against (the image lacks them).
packages=(
  nlohmann-json3-dev libfmt-dev libfmt9 libcli11-dev
  libhwy-dev libhwy1 libpcre2-dev libpcre2-8-0 libpcre2-16-0 libpcre2-32-0 libpcre2-posix3
  libgtest-dev libgmock-dev libbenchmark-dev libbenchmark1debian
)
(cd "$dest" && apt-get download "${packages[@]}" >/dev/null)
if [ "${BNB_WHEEL:-0}" = 1 ] || [ "${LORA_WHEELS:-0}" = 1 ]; then
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_24_x86_64 -d "$tmp" bitsandbytes==0.50.2 >/dev/null
  rm -rf "$dest/py/bitsandbytes" "$dest"/py/bitsandbytes-*.dist-info && mkdir -p "$dest/py"
  unzip -q "$tmp"/bitsandbytes-*.whl -d "$dest/py"
  # Only the CUDA-13 and CPU libraries travel: the others would push the carry past its 64 MiB.
  find "$dest/py/bitsandbytes" -name 'libbitsandbytes_*' ! -name '*cuda130*' ! -name '*_cpu.so' -delete
  rm -f "$tmp"/*.whl
fi
if [ "${LORA_WHEELS:-0}" = 1 ]; then
  # The image has torch and transformers; PEFT and accelerate are pure Python (psutil: PEFT imports it).
  python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 -d "$tmp" peft==0.21.2 accelerate==1.15.0 psutil==7.2.2 >/dev/null
  for wheel in "$tmp"/*.whl; do unzip -qo "$wheel" -d "$dest/py"; done
fi
if [ "${PY_WHEELS:-0}" = 1 ]; then
  tmp="$(mktemp -d)"
  python3 -m pip download --no-deps --only-binary=:all: -d "$tmp" \
    nanobind==2.9.2 pytest==8.4.2 pluggy==1.6.0 iniconfig==2.1.0 packaging==25.0 >/dev/null
  mkdir -p "$dest/py"
  for wheel in "$tmp"/*.whl; do unzip -qo "$wheel" -d "$dest/py"; done
  rm -rf "$tmp"
fi
if [ "${LLAMA_SOURCE:-0}" = 1 ]; then
  source_dir="$(dirname "$(scripts/llama-cpp-tools.sh)")/../src"
  tar -cJf "$dest/llama-src.tar.xz" -C "$source_dir" --exclude=./models --exclude=./docs --exclude=./media \
    --exclude=./benches --exclude=./tests --exclude=./examples --exclude=./tools/server/public \
    --exclude=./ggml/src/ggml-sycl --exclude=./ggml/src/ggml-vulkan --exclude=./ggml/src/ggml-opencl \
    --exclude=./ggml/src/ggml-hexagon --exclude=./ggml/src/ggml-metal --exclude=./ggml/src/ggml-et .
fi
if [ "${LLAMA_CUDA:-0}" = 1 ]; then
  source_dir="$(dirname "$(scripts/llama-cpp-tools.sh)")/../src"  # the vendored llama.cpp, fetched and checked there
  build="${LLAMA_CUDA_BUILD:-build/llama.cpp-cuda}"
  launcher=()
  command -v ccache >/dev/null && launcher=(-DCMAKE_C_COMPILER_LAUNCHER=ccache -DCMAKE_CXX_COMPILER_LAUNCHER=ccache -DCMAKE_CUDA_COMPILER_LAUNCHER=ccache)
  cmake -S "$source_dir" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DGGML_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 \
    -DGGML_CUDA_FA=OFF -DGGML_NATIVE=OFF -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
    -DLLAMA_BUILD_SERVER=OFF -DBUILD_SHARED_LIBS=ON "${launcher[@]}" >/dev/null
  cmake --build "$build" -j "$(nproc)" --target llama-bench llama-perplexity >/dev/null
  # The tools and the libraries under the names they load (sonames), stripped and packed: about 29 MB.
  # The tools link here against a driver library this machine lacks (libcuda.so.1): the device has it.
  cmake -S "$source_dir" -B "$build" -DCMAKE_EXE_LINKER_FLAGS=-Wl,--allow-shlib-undefined >/dev/null
  cmake --build "$build" -j "$(nproc)" --target llama-bench llama-perplexity >/dev/null
  pack="$(mktemp -d)"
  cp "$build"/bin/llama-bench "$build"/bin/llama-perplexity "$build"/bin/libllama-*-impl.so "$pack/"
  for lib in libggml-base libggml-cpu libggml-cuda libggml libllama libllama-common; do cp -L "$build/bin/$lib.so.0" "$pack/"; done
  strip --strip-unneeded "$pack"/*
  tar -cJf "$dest/llama-cuda.tar.xz" -C "$pack" .
  rm -rf "$pack"
fi
du -sh "$dest"
