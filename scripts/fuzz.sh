#!/usr/bin/env bash
# Builds the libFuzzer targets (clang, ASan + UBSan) and runs each for SECONDS (default: the target's
# own, 30 s for the containers, 15 s for the side-file parsers), one after the other.
# Usage: scripts/fuzz.sh [SECONDS] [TARGET...]   e.g. scripts/fuzz.sh 600 gguf
#        scripts/fuzz.sh "" tokenizer_json      (its default time)
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-}
shift || true
targets=("$@")
# One target per parser a user can hand lowbit, each in fuzz/<target>_fuzz.cpp, seeded from fuzz/seeds/<target>/.
all=(safetensors gguf hf_config hf_index tokenizer_json tokenizer_config gguf_model imatrix hessian bnb_quant_state bnb_checkpoint
     plan rules kld_base lora_adapter)
[ ${#targets[@]} -gt 0 ] || targets=("${all[@]}")
default_seconds() { case "$1" in safetensors|gguf) echo 30 ;; *) echo 15 ;; esac; }

out=build/fuzz
mkdir -p "$out/obj"
flags=(-std=c++20 -g -O1 -fsanitize=address,undefined -fno-sanitize-recover=undefined -Iinclude -Isrc
       $(pkg-config --cflags libpcre2-8 libhwy))
libs=(-lfmt $(pkg-config --libs libpcre2-8 libhwy) -pthread)
# The library without its CUDA part and CLI: each source compiled once, every target links what it uses.
sources=(src/core/*.cpp src/formats/*.cpp src/kernels/cpu/*.cpp src/io/*.cpp src/model/*.cpp src/plan/*.cpp src/pipeline/*/*.cpp)

# A source is rebuilt when it or any header is newer than its object (headers are few; this stays simple).
newest_header=$(find include src -name '*.h' -printf '%T@\n' | sort -n | tail -1)
stale=()
for src in "${sources[@]}"; do
  obj="$out/obj/$(echo "${src%.cpp}" | tr / _).o"
  if [ ! -f "$obj" ] || [ "$src" -nt "$obj" ] || awk -v h="$newest_header" -v o="$(stat -c %Y "$obj")" 'BEGIN { exit !(h > o) }'; then
    stale+=("$src")
  fi
done
if [ ${#stale[@]} -gt 0 ]; then
  echo "compiling ${#stale[@]} sources for fuzzing"
  printf '%s\n' "${stale[@]}" | xargs -P "${LOWBIT_FUZZ_JOBS:-$(nproc)}" -I{} sh -c \
    'clang++ "$@" -fsanitize=fuzzer-no-link -c {} -o '"$out"'/obj/$(echo {} | sed "s/\.cpp$//; s#/#_#g").o' _ "${flags[@]}"
fi
objects=()
for src in "${sources[@]}"; do objects+=("$out/obj/$(echo "${src%.cpp}" | tr / _).o"); done

total=0
for target in "${targets[@]}"; do
  binary="$out/${target}_fuzz"
  if [ ! -x "$binary" ] || [ -n "$(find "fuzz/${target}_fuzz.cpp" fuzz/fuzz_support.h "${objects[@]}" -newer "$binary" -print -quit)" ]; then
    echo "building $binary"
    clang++ "${flags[@]}" -fsanitize=fuzzer "fuzz/${target}_fuzz.cpp" "${objects[@]}" "${libs[@]}" -o "$binary"
  fi
  run=${seconds:-$(default_seconds "$target")}
  total=$((total + run))
  corpus="$out/corpus-$target"
  mkdir -p "$corpus" "$out/findings-$target"
  echo "fuzzing $target for ${run}s"
  status=0
  "$binary" -max_total_time="$run" -timeout=10 -rss_limit_mb=4096 -print_final_stats=1 \
    -artifact_prefix="$out/findings-$target/" "$corpus" "fuzz/seeds/$target" >"$out/$target.log" 2>&1 || status=$?
  grep -E '^(stat::number_of_executed_units|stat::peak_rss_mb|SUMMARY)' "$out/$target.log" || true
  if [ "$status" -ne 0 ]; then
    tail -n 40 "$out/$target.log"
    echo "fuzz: $target failed (exit $status); the input is in $out/findings-$target/"
    exit 1
  fi
done
echo "fuzzed ${#targets[@]} targets for ${total}s in all"
