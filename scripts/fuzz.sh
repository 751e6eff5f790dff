#!/usr/bin/env bash
# Builds the libFuzzer targets (clang, ASan + UBSan) and runs each for SECONDS (default 30).
# Usage: scripts/fuzz.sh [SECONDS] [TARGET...]   e.g. scripts/fuzz.sh 600 gguf
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-30}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(safetensors gguf)

out=build/fuzz
mkdir -p "$out"
flags=(-std=c++20 -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined -Iinclude -Isrc)
# The parsers and what they stand on: core, the ggml type table, io. Nothing else.
sources=(src/core/*.cpp src/formats/ggml_types.cpp src/io/*.cpp)

for target in "${targets[@]}"; do
  binary="$out/${target}_fuzz"
  if [ ! -x "$binary" ] || [ -n "$(find fuzz/${target}_fuzz.cpp "${sources[@]}" include -newer "$binary" -print -quit)" ]; then
    echo "building $binary"
    clang++ "${flags[@]}" "fuzz/${target}_fuzz.cpp" "${sources[@]}" -lfmt -o "$binary"
  fi
  corpus="$out/corpus-$target"
  mkdir -p "$corpus" "$out/findings-$target"
  echo "fuzzing $target for ${seconds}s"
  status=0
  "$binary" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=4096 -print_final_stats=1 \
    -artifact_prefix="$out/findings-$target/" "$corpus" "fuzz/seeds/$target" >"$out/$target.log" 2>&1 || status=$?
  grep -E '^(stat::number_of_executed_units|stat::peak_rss_mb|SUMMARY)' "$out/$target.log" || true
  if [ "$status" -ne 0 ]; then
    tail -n 40 "$out/$target.log"
    echo "fuzz: $target failed (exit $status); the input is in $out/findings-$target/"
    exit 1
  fi
done
