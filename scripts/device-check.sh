#!/usr/bin/env bash
# One call on the lent GPU machine: build lowbit with CUDA for sm_90a, run the CUDA tests and the
# transformers + bitsandbytes interop proof, print the results. The device image has nvcc, CMake,
# ninja, torch and transformers but not lowbit's Debian libraries nor bitsandbytes: they travel in
# .deps/ (scripts/device-deps.sh: Debian .debs; BNB_WHEEL=1 adds bitsandbytes' wheel unpacked in .deps/py).
# See docs/benchmarks.md.
#
# What travels: the device tool sends the checkout it was started in, at most 64 MiB, and neither
# ../shared nor anything git ignores unless the call names it in `carry`. So, from the checkout root:
#   scripts/device-deps.sh .deps                          the build's Debian packages (3 MB)
#   mkdir -p .devdata/data && cp ../shared/data/{lowbit-bytes-12M-bf16.gguf,stories260K.gguf,\
#     wikitext2_test_hf_nonempty_crlf.raw,tinystories_valid_first1000.txt} .devdata/data/   (29 MB)
#   lowbit quantize ../shared/data/lowbit-bpe-50M -o .devdata/data/lowbit-bpe-50M-q4_K.gguf --format q4_K  (29 MB)
# (all ignored: .gitignore), then one call with carry [".deps", ".devdata"] running
#   ln -sfn $PWD/.devdata shared && scripts/device-check.sh model
# (the tests read ../shared beside the checkout; on the device that is the carried .devdata). A
# helper working in another worktree copies its sources into the sent checkout's ignored .devsrc/
# (carry [".devsrc", ".deps", ".devdata"]) and runs `cd .devsrc && LOWBIT_DEVICE_DEPS=../.deps ...`.
# SmolLM2's GGUF (92 MB) cannot travel whole: lowbit-bpe-50M stands in for it in the agreement tests.
# The packed-bitsandbytes test (CudaRuntime.Bitsandbytes*) quantizes the lowbit-bpe-50M directory itself (its
# 100 MB safetensors): it travels xz-compressed in two parts to the same warm machine (the device gives a machine
# back after 30 s idle, so the second call follows at once). `xz -6 model.safetensors`, `head -c 55000000` into
# .devbpe/bpe/ and the rest (`tail -c +55000001`) with the JSON files into .devbpe2/bpe/; the .devdata of that call
# leaves out the q4_K GGUF, which is made on the device:
#   call 1, carry [".deps", ".devbpe"]:   mkdir -p /tmp/bpe && cp .devbpe/bpe/* /tmp/bpe/ && scripts/device-check.sh bench
#   call 2, carry [".deps", ".devdata", ".devbpe2"]:  d=.devdata/data/lowbit-bpe-50M; mkdir -p $d &&
#     cat /tmp/bpe/*.part1 .devbpe2/bpe/*.part2 | xz -d > $d/model.safetensors && cp .devbpe2/bpe/*.json $d/ &&
#     ln -sfn $PWD/.devdata ../shared && scripts/device-check.sh build && build-device/lowbit quantize $d
#     -o .devdata/data/lowbit-bpe-50M-q4_K.gguf --format q4_K --quiet && scripts/device-check.sh model
#
#   scripts/device-check.sh           build, CUDA tests
#   scripts/device-check.sh build     build lowbit only (a later call runs it, e.g. scripts/lora-proof.sh)
#   scripts/device-check.sh interop   + the transformers/bitsandbytes interop proofs (uniform and planned checkpoints)
#   scripts/device-check.sh bench     + the GPU benchmarks (lowbit_cuda_bench: codecs and matmuls), then
#                                     bitsandbytes timed the same way (bench/bnb_reference_bench.py);
#                                     tables also in $OUT/cuda_bench.md and $OUT/bnb_bench.md when $OUT is set
#   scripts/device-check.sh goals     issue 16's goals in one call: tests, every benchmark with its references, the
#                                     runtime before and after (scripts/device-goals.sh says what travels)
#   scripts/device-check.sh decode    the matmul tests and decoding's products alone (lowbit_cuda_bench --decode-only)
#   scripts/device-check.sh codecs    the codec benchmarks alone (lowbit_cuda_bench --codecs-only), then ncu's speed of
#                                     light, memory and warp-stall sections for each kernel regex in NCU_KERNELS
#                                     (at 4096x4096; NCU_LARGE=1: at 4096x14336)
#   scripts/device-check.sh model     + the model runtime on the GPU against the CPU (tests/model_cuda: KL-divergence,
#                                     perplexity, importance matrices, a probed plan, greedy decoding), eval through the
#                                     CLI on both devices, bench --model
#   scripts/device-check.sh model python   + the Python package's CUDA tests (python/tests/test_cuda.py; needs
#                                     PY_WHEELS=1 scripts/device-deps.sh for nanobind and pytest)
# The speed table travels without the models (room for llama.cpp's 29 MB): .devspeed/data holds the 12M model's
# metadata alone (synthetic_llama.py's write_gguf over read_metadata, no tensors), SmolLM2's metadata and the
# WikiText-2 text; carry [".deps", ".devspeed", ".devllama"], `ln -sfn $PWD/.devspeed shared && SPEED_TESTS=0
# scripts/device-check.sh speed`.
#   scripts/device-check.sh speed     the speed table (scripts/device-speed.sh: a synthetic 8B shape beside llama.cpp's
#                                     CUDA tools from $LLAMA_CPP_BIN, transformers and bitsandbytes)
#   scripts/device-check.sh patch     the Python package and the matmul tests (C++ and Python), then transformers +
#                                     bitsandbytes before and after
#                                     lowbit.integrations.bitsandbytes.patch() (python/bench/bnb_patch_bench.py) on
#                                     SmolLM2-135M's and Llama-3-8B's shapes (needs BNB_WHEEL=1 scripts/device-deps.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
deps=${LOWBIT_DEVICE_DEPS:-.deps}
data=../shared/data
prefix=/tmp/lowbit-deps
mkdir -p "$prefix"
for deb in "$deps"/*.deb; do dpkg-deb -x "$deb" "$prefix"; done
export CMAKE_PREFIX_PATH="$prefix/usr"
export PKG_CONFIG_PATH="$prefix/usr/lib/x86_64-linux-gnu/pkgconfig:$prefix/usr/share/pkgconfig"
export LD_LIBRARY_PATH="$prefix/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}"
export CPATH="$prefix/usr/include"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
python_option=
if [ "${1:-}" = "patch" ]; then
  export PYTHONPATH="$PWD/$deps/py:${PYTHONPATH:-}"
  python_option="-DLOWBIT_PYTHON=ON -DPython_EXECUTABLE=$(command -v python3)"
fi
cmake -S . -B build-device -G Ninja -DCMAKE_BUILD_TYPE=Release -DLOWBIT_CUDA=ON $python_option \
  -DCMAKE_CUDA_ARCHITECTURES=90a -DGTest_DIR="$prefix/usr/lib/x86_64-linux-gnu/cmake/GTest" >/tmp/cmake.log 2>&1 \
  || { tail -40 /tmp/cmake.log; exit 1; }
targets="lowbit lowbit_kernels_tests"
[ "${1:-}" = "bench" ] && targets="lowbit lowbit_kernels_tests lowbit_cuda_bench"
[ "${1:-}" = "model" ] && targets="lowbit lowbit_kernels_tests lowbit_model_cuda_tests"
[ "${1:-}" = "speed" ] && targets="lowbit lowbit_kernels_tests lowbit_model_cuda_tests"
[ "${1:-}" = "build" ] && targets="lowbit"
[ "${1:-}" = "decode" ] && targets="lowbit_kernels_tests lowbit_cuda_bench"
[ "${1:-}" = "goals" ] && targets="lowbit lowbit_kernels_tests lowbit_model_cuda_tests lowbit_cuda_bench"
[ "${1:-}" = "codecs" ] && targets="lowbit_cuda_bench"
[ "${1:-}" = "patch" ] && targets="_lowbit lowbit_cuda lowbit_kernels_tests"
cmake --build build-device -j "$(nproc)" --target $targets > /tmp/build.log 2>&1 || { grep -E "error|FAILED" -A3 /tmp/build.log | head -40; exit 1; }
[ "${1:-}" = "build" ] && exit 0
[ "${1:-}" = "goals" ] && exec scripts/device-goals.sh
if [ "${1:-}" = "decode" ]; then
  status=0
  build-device/tests/lowbit_kernels_tests --gtest_brief=1 --gtest_filter='CudaMatmul*' || status=$?
  build-device/bench/lowbit_cuda_bench --decode-only | tee "${OUT:-/tmp}/decode_bench.md"
  exit "$status"
fi
if [ "${1:-}" = "codecs" ]; then
  build-device/bench/lowbit_cuda_bench --codecs-only | tee "${OUT:-/tmp}/codecs_bench.md"
  size=--quick  # ncu: one launch each, at 4096x4096 (L2-resident); NCU_LARGE=1: at 4096x14336
  [ -n "${NCU_LARGE:-}" ] && size=--large
  for kernel in ${NCU_KERNELS:-}; do
    echo "## ncu: $kernel"
    timeout 120 ncu --clock-control none --kernel-name-base demangled -k "regex:$kernel" -c 1 --section SpeedOfLight \
      --section MemoryWorkloadAnalysis --section WarpStateStats --section Occupancy --section LaunchStats \
      build-device/bench/lowbit_cuda_bench --codecs-only $size 2>&1 | grep -E "^  [a-z]|^    [^ -].* [0-9.,]+$|cycles being" | cut -c1-300
  done
  exit 0
fi
if [ "${1:-}" = "patch" ]; then
  export PYTHONPATH="$PWD/build-device/python:$PYTHONPATH"
  status=0
  build-device/tests/lowbit_kernels_tests --gtest_brief=1 --gtest_filter='CudaMatmul*' || status=$?
  python3 -m pytest -q -rs python/tests/test_cuda.py || status=$?
  variants=("" "--double-quant")
  [ "${PATCH_DOUBLE_QUANT:-1}" = 0 ] && variants=("")  # nf4 only
  for shape in "--shape smollm2-135m" "--shape llama3-8b --layers ${PATCH_LAYERS:-8}"; do
    for dq in "${variants[@]}"; do
      python3 python/bench/bnb_patch_bench.py $shape $dq 2>&1 | grep -v -i warn || status=1
    done
  done
  exit "$status"
fi
if [ "${1:-}" = "model" ]; then
  status=0
  build-device/tests/lowbit_kernels_tests --gtest_brief=1 || status=$?
  # lowbit-bpe-50M stands in for SmolLM2 where it travelled (the test skips without either).
  [ -f "$data/lowbit-bpe-50M-q4_K.gguf" ] && export LOWBIT_GPU_TEST_MODEL="$data/lowbit-bpe-50M-q4_K.gguf"
  build-device/tests/lowbit_model_cuda_tests || status=$?
  # The CLI on both devices: the same JSON, the same numbers to the agreement the tests check.
  TIMEFORMAT="eval --device %3R s"
  for device in cpu cuda; do
    echo "--device $device:"
    time (build-device/lowbit eval "$data/lowbit-bytes-12M-bf16.gguf" --text "$data/wikitext2_test_hf_nonempty_crlf.raw" \
      --chunks 16 --device $device --quiet --json | tr -d '\n '; echo)
  done
  build-device/lowbit bench --model "$data/lowbit-bytes-12M-bf16.gguf" --device cuda || status=$?
  if [ "${2:-}" = "python" ]; then
    export PYTHONPATH="$PWD/$deps/py:${PYTHONPATH:-}"
    cmake -S . -B build-device -DLOWBIT_PYTHON=ON -DPython_EXECUTABLE="$(command -v python3)" >/tmp/cmake.log 2>&1 || { tail -40 /tmp/cmake.log; exit 1; }
    cmake --build build-device -j "$(nproc)" --target _lowbit lowbit_cuda > /tmp/build.log 2>&1 || { grep -E "error|FAILED" -A3 /tmp/build.log | head -40; exit 1; }
    PYTHONPATH="$PWD/build-device/python:$PYTHONPATH" python3 -m pytest -q -rs python/tests/test_cuda.py || status=$?
  fi
  exit "$status"
fi
if [ "${1:-}" = "speed" ]; then
  # The GPU runtime's agreement with the CPU on the small models first (the kernels the table times), where
  # they travelled (a speed call may carry only the 12M model's metadata to leave room for llama.cpp).
  if [ "${SPEED_TESTS:-1}" = 1 ]; then
    build-device/tests/lowbit_kernels_tests --gtest_brief=1 || exit 1
    build-device/tests/lowbit_model_cuda_tests --gtest_brief=1 \
      --gtest_filter='CudaRuntime.Bytes12M*:CudaRuntime.Greedy*:CudaRuntime.DecodingGraphs*:CudaRuntime.Mixture*' || exit 1
  fi
  # llama.cpp's CUDA tools where they travelled (LLAMA_CUDA=1 scripts/device-deps.sh .devllama; carry .devllama),
  # bitsandbytes from .deps/py.
  llama=
  pack=${LLAMA_CUDA_PACK:-.devllama/llama-cuda.tar.xz}
  if [ -f "$pack" ]; then
    llama=/tmp/llama-cuda && mkdir -p "$llama" && tar -xJf "$pack" -C "$llama"
  fi
  PYTHONPATH="$PWD/$deps/py:${PYTHONPATH:-}" scripts/device-speed.sh build-device/lowbit "$data" "$llama"
  exit 0
fi
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
