#!/usr/bin/env bash
# The kernel-speed call of docs/benchmarks.md ("CUDA kernels on the H200"), one device call from the
# checkout root (or a helper's copy in .devsrc, with LOWBIT_DEVICE_DEPS=../.deps):
#   scripts/device-check.sh bench     build, CUDA tests, lowbit_cuda_bench (codecs, fused matmuls vs cuBLAS)
#   the model tests that run attention (agreement with the CPU, greedy decoding through the KV cache)
#   scripts/device-speed.sh           4-layer synthetic 8B shape: prefill / decode tok/s (bench --model)
#   ncu on the nf4 quantize kernel    (NCU_KERNEL to pick another, e.g. "dequantize_ggml_kernel<.*Q3K")
# Carry [".deps", ".devdata/data/<file>" …] as scripts/device-check.sh's header says; logs land in $OUT.
set -uo pipefail
cd "$(dirname "$0")/../.."
out=${OUT:-/tmp}
scripts/device-check.sh bench > "$out/bench.log" 2>&1
grep -E "PASSED|FAILED|copy16|dequant q|dequant nf4 -> bf16|quant bf16 -> (nf4|fp4)|bf16 .*\| +(1|8) \|" "$out/bench.log"
prefix=/tmp/lowbit-deps  # unpacked by device-check.sh
export CMAKE_PREFIX_PATH="$prefix/usr" PKG_CONFIG_PATH="$prefix/usr/lib/x86_64-linux-gnu/pkgconfig:$prefix/usr/share/pkgconfig"
export LD_LIBRARY_PATH="$prefix/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}" CPATH="$prefix/usr/include"
cmake --build build-device -j "$(nproc)" --target lowbit_model_cuda_tests > /tmp/model-build.log 2>&1 || grep -E "error" -A3 /tmp/model-build.log | head
build-device/tests/lowbit_model_cuda_tests --gtest_brief=1 --gtest_filter='*Stories260K*:*Bytes12M*:*Greedy*' 2>&1 | tee "$out/model.log" | tail -4
LAYERS=${LAYERS:-4} FORMATS=${FORMATS:-q4_K} scripts/device-speed.sh build-device/lowbit ../shared/data 2>&1 | grep -v Warning |
  grep -E "^\||device|transformers" | tail -6
if command -v ncu > /dev/null; then
  timeout 60 ncu --clock-control none --kernel-name-base demangled -k "regex:${NCU_KERNEL:-::quantize_4bit_kernel<}" -c 1 \
    --section SpeedOfLight --section Occupancy --section WarpStateStats build-device/bench/lowbit_cuda_bench --codecs-only --quick > "$out/ncu.txt" 2>&1
  grep -E "Duration|DRAM Throughput|Compute \(SM\)|Achieved Occupancy|Warp Cycles Per Issued|cycles being" "$out/ncu.txt" | cut -c1-150 | head -12
fi
