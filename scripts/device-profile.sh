#!/usr/bin/env bash
# Where the GPU's time goes, in one device call after `scripts/device-check.sh build` (carry as for the
# speed table: [".deps", ".devspeed"], `ln -sfn $PWD/.devspeed ../shared`):
#   1. every kernel of one evaluation pass (16 windows × 512 tokens, what `lowbit eval` runs) on a
#      synthetic 8B shape of LAYERS blocks (default 2), per format in FORMATS (default "bf16 Q4_K_M"),
#      timed by ncu and summed per kernel: which kernels hold the pass's time;
#   2. ncu's speed-of-light, occupancy and warp-stall sections for decoding's products at one token
#      (the fused q4_K kernel and matvec q6_K, 14336x4096), from lowbit_cuda_bench.
# ncu runs with --clock-control none (the device's METHOD.md: leave the clocks alone). Output on stdout.
set -uo pipefail
cd "$(dirname "$0")/.."
lowbit=${1:-build-device/lowbit}
data=${2:-../shared/data}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cmake --build build-device --target lowbit_cuda_bench > /tmp/profile-build.log 2>&1 || { grep -E "error" -A3 /tmp/profile-build.log | head -20; exit 1; }

python3 scripts/synthetic_llama.py "$data/smollm2-135m-metadata.gguf" "$work/s8b.gguf" --layers "${LAYERS:-2}" 2>&1 | grep -v -i warn
head -c 200000 "$data/wikitext2_test_hf_nonempty_crlf.raw" > "$work/text.txt"
for f in ${FORMATS:-bf16 Q4_K_M}; do
  model="$work/s8b.gguf"
  if [ "$f" != bf16 ]; then
    if [[ $f == Q* ]]; then how=(--mix "$f"); else how=(--format "$f"); fi
    "$lowbit" quantize "$work/s8b.gguf" -o "$work/$f.gguf" "${how[@]}" --quiet || continue
    model="$work/$f.gguf"
  fi
  timeout 300 ncu --clock-control none --metrics gpu__time_duration.sum --csv --kernel-name-base demangled \
    "$lowbit" eval "$model" --text "$work/text.txt" --ctx 512 --chunks 16 --device cuda --quiet > "$work/$f.csv" 2> "$work/$f.err" ||
    { tail -5 "$work/$f.err"; continue; }
  echo "## $f: one evaluation pass of 16 × 512 tokens, ${LAYERS:-2} blocks, per kernel"
  python3 - "$work/$f.csv" <<'PY'
import csv, re, sys
lines = [l for l in open(sys.argv[1]) if l.startswith('"')]
scale = {"nsecond": 1e-3, "usecond": 1.0, "msecond": 1e3, "second": 1e6}
total, by = 0.0, {}
for r in csv.DictReader(lines):
    if r.get("Metric Name") != "gpu__time_duration.sum": continue
    us = float(r["Metric Value"].replace(",", "")) * scale.get(r["Metric Unit"], 1.0)
    name = re.sub(r"\(.*", "", r["Kernel Name"])[:110]
    n, t = by.get(name, (0, 0.0))
    by[name] = (n + 1, t + us)
    total += us
print(f"total kernel time {total/1e3:.2f} ms over {sum(n for n, _ in by.values())} launches")
for name, (n, t) in sorted(by.items(), key=lambda kv: -kv[1][1])[:25]:
    print(f"{t/1e3:9.3f} ms {100*t/total:5.1f}% {n:5d}x  {name}")
PY
done

bench=build-device/bench/lowbit_cuda_bench
for kernel in "fused_matmul_kernel" "ggml_matvec_kernel<.*Q6K"; do
  echo "## ncu: first launch matching $kernel (14336x4096, 1 token)"
  timeout 120 ncu --clock-control none --kernel-name-base demangled -k "regex:$kernel" -c 1 --section SpeedOfLight \
    --section Occupancy --section WarpStateStats --section LaunchStats --section InstructionStats --section MemoryWorkloadAnalysis \
    "$bench" --matmul-only --quick > "$work/ncu.txt" 2>&1
  grep -E "Duration|DRAM Throughput|Memory Throughput|Compute \(SM\)|Achieved Occupancy|Theoretical Occupancy|Registers Per|Warp Cycles Per Issued|Issue Slots|Executed Ipc|cycles being|stalled|L1/TEX Hit|Block Limit" "$work/ncu.txt" | cut -c1-220 | head -40
done
