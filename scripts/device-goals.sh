#!/usr/bin/env bash
# Issue 16's goals in one device call: the CUDA tests, every GPU benchmark beside its references measured in the
# same run (the copy kernel, cuBLAS, bitsandbytes), and the GPU runtime's prefill and decoding speed built from
# this tree and from an earlier commit ("before"), then one table of every goal (scripts/goals_table.py).
#
# Here, once (all ignored; about 37 MB with the .debs):
#   BNB_WHEEL=1 scripts/device-deps.sh .deps          the build's .debs and bitsandbytes' wheel
#   scripts/device-goals.sh --prepare [COMMIT]          .devgoals: COMMIT's source (default 1396e7e, main when issue
#                                                       16 was filed) and the data the tests and the model read
# then one device call with carry [".deps", ".devgoals"]:
#   ln -sfn $PWD/.devgoals ../shared && scripts/device-check.sh goals
# which builds this tree and runs this script (the environment device-check.sh made for the build). Results land
# in $OUT: tests.txt, model_tests.txt, bench-{codecs,decode,4bit,4bit-between,int8}.md, bnb.md, runtime.md and
# goals.md, the table for docs/benchmarks.md.
set -uo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "--prepare" ]; then
  commit=${2:-1396e7e}
  mkdir -p .devgoals/data
  git archive "$commit" | xz -3 > .devgoals/before-src.tar.xz
  echo "$commit" > .devgoals/before-commit
  cp ../shared/data/{lowbit-bytes-12M-bf16.gguf,stories260K.gguf,wikitext2_test_hf_nonempty_crlf.raw,tinystories_valid_first1000.txt} .devgoals/data/
  du -sh .devgoals
  exit 0
fi
out=${OUT:-/tmp/goals}
mkdir -p "$out"
start=$(date +%s)
stamp() { echo "[$(($(date +%s) - start)) s] $*"; }
before=/tmp/before
new=build-device/lowbit bench=build-device/bench/lowbit_cuda_bench

# The earlier commit builds on the CPUs while the tests hold the GPU.
rm -rf "$before" && mkdir -p "$before" && tar -xJf .devgoals/before-src.tar.xz -C "$before"
(cmake -S "$before" -B "$before/build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DLOWBIT_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90a \
  -DGTest_DIR="$CMAKE_PREFIX_PATH/lib/x86_64-linux-gnu/cmake/GTest" > /tmp/before-cmake.log 2>&1 &&
  cmake --build "$before/build" -j "$(nproc)" --target lowbit > /tmp/before-build.log 2>&1) &
builder=$!
timeout 200 build-device/tests/lowbit_kernels_tests --gtest_brief=1 --gtest_filter='Cuda*' > "$out/tests.txt" 2>&1
echo "CUDA kernel tests: rc $?, $(grep -E '^\[  (PASSED|FAILED|SKIPPED) ' "$out/tests.txt" | tr '\n' ' ')"
timeout 200 build-device/tests/lowbit_model_cuda_tests --gtest_brief=1 > "$out/model_tests.txt" 2>&1
echo "model runtime tests: rc $?, $(grep -E '^\[  (PASSED|FAILED|SKIPPED) ' "$out/model_tests.txt" | tr '\n' ' ')"
wait "$builder" || { echo "the earlier commit did not build:"; tail -20 /tmp/before-cmake.log /tmp/before-build.log; }
stamp "tests, builds"

for products in codecs decode 4bit int8; do
  timeout 200 "$bench" "--$products-only" > "$out/bench-$products.md" 2>&1 || echo "bench --$products-only failed"
done
# Where the wide kernel and dequantize + cuBLAS cross (the library switches at kWideDequantizeTokens).
timeout 100 "$bench" --4bit-only --tokens 320,384,448 > "$out/bench-4bit-between.md" 2>&1
PYTHONPATH="$PWD/.deps/py" timeout 300 python3 bench/bnb_reference_bench.py --graph 2>&1 | grep -v Warning > "$out/bnb.md"
stamp "benchmarks"

# The runtime on an 8B-shaped model (8 of Llama-3-8B's 32 blocks, the 12M model's byte vocabulary), in q4_K and in
# nf4 with double quant (the bitsandbytes checkpoint lowbit writes), at four prompt lengths, before and after.
work=$(mktemp -d)
python3 scripts/synthetic_llama.py ../shared/data/lowbit-bytes-12M-bf16.gguf "$work/s8b.gguf" --layers 8 2>&1 | grep -v Warning
"$new" quantize "$work/s8b.gguf" -o "$work/q4_K.gguf" --format q4_K --quiet
"$new" dequantize "$work/s8b.gguf" -o "$work/hf" --dtype bf16 --quiet &&
  "$new" quantize "$work/hf" -o "$work/nf4" --format nf4 --double-quant --quiet && rm -rf "$work/hf"
{
  echo "| model | prompt | build | prefill tok/s | decode tok/s (64, batch 1) | eval pass tok/s |"
  echo "|---|--:|---|--:|--:|--:|"
} > "$out/runtime.md"
for prompt in 64 128 256 512; do
  for model in q4_K.gguf nf4; do
    for build in "before $(cat .devgoals/before-commit)" "after"; do
      lowbit=$new
      [ "${build%% *}" = before ] && lowbit=$before/build/lowbit
      if timeout 100 "$lowbit" bench --model "$work/$model" --device cuda --prompt "$prompt" --gen 64 --json > "$work/bench.json" 2> "$work/bench.err"; then
        python3 - "$work/bench.json" "${model%.gguf}" "$prompt" "$build" >> "$out/runtime.md" <<'PY'
import json, sys
j = json.load(open(sys.argv[1]))
print(f"| {sys.argv[2]} | {sys.argv[3]} | {sys.argv[4]} | {j['prefill_tokens_per_s']:.0f} | {j['decode_tokens_per_s']:.1f} "
      f"| {j.get('forward_tokens_per_s', 0):.0f} |")
PY
      else
        echo "| ${model%.gguf} | $prompt | $build | failed: $(tail -1 "$work/bench.err") | | |" >> "$out/runtime.md"
      fi
    done
  done
done
rm -rf "$work"
stamp "runtime"
python3 scripts/goals_table.py "$out" | tee "$out/goals.md"
