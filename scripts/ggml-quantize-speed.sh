#!/usr/bin/env bash
# Single-thread quantize / dequantize speed of lowbit's ggml codecs against ggml's own, in one run on
# one machine (docs/benchmarks.md, "GGML quantization, single thread"). ggml is built from a source tree
# you provide, outside this repository (ggml-org/ggml d99724f2 is the commit the golden files come from:
# `git -C ggml archive d99724f2 | tar -x -C DIR`), target ggml-base only (the quantizers), as llama.cpp
# users build it; bench/ggml_reference/ggml_quantize_time.c drives it. lowbit's side is
# build/bench/lowbit_bench (build it first: cmake --build build --target lowbit_bench).
#
#   scripts/ggml-quantize-speed.sh GGML_SOURCE_DIR [TYPE...]    (default: the seven i-quants)
#
# Prints, per type, million values per second of each side (CPU time of the calling thread) and
# lowbit / ggml. ggml first, then lowbit; run it twice and keep the best of each side on a busy machine.
set -euo pipefail
cd "$(dirname "$0")/.."
ggml=${1:?usage: scripts/ggml-quantize-speed.sh GGML_SOURCE_DIR [TYPE...]}
shift
types=("$@")
[ ${#types[@]} -gt 0 ] || types=(iq1_s iq1_m iq2_xxs iq2_xs iq2_s iq3_xxs iq3_s)
bench=build/bench/lowbit_bench
[ -x "$bench" ] || { echo "build $bench first" >&2; exit 1; }

launcher=()
command -v ccache >/dev/null && launcher=(-DCMAKE_C_COMPILER_LAUNCHER=ccache -DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
if [ ! -f "$ggml/build/build.ninja" ]; then
  cmake -S "$ggml" -B "$ggml/build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON -DGGML_OPENMP=OFF \
    "${launcher[@]}" >&2
fi
cmake --build "$ggml/build" -j2 --target ggml-base >&2
timer="$ggml/build/ggml_quantize_time"
cc -O2 -std=c11 -I "$ggml/include" bench/ggml_reference/ggml_quantize_time.c -o "$timer" \
  -L "$ggml/build/src" -lggml-base -Wl,-rpath,"$(cd "$ggml/build/src" && pwd)" -lm

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
"$timer" "${types[@]}" | tee "$out/ggml.txt" >&2
filter=$(IFS='|'; echo "BM_ggml_.*/(${types[*]})/")
"$bench" --benchmark_filter="$filter" --benchmark_format=json > "$out/lowbit.json"

python3 - "$out/ggml.txt" "$out/lowbit.json" "${types[@]}" <<'PY'
import json, re, sys
ggml = {}
for line in open(sys.argv[1]):
    mode, rate, _ = line.split()
    ggml[mode] = float(rate)
lowbit = {}
for b in json.load(open(sys.argv[2]))["benchmarks"]:
    mode = re.sub(r"^BM_ggml_|/min_time:.*$", "", b["name"])
    lowbit[mode] = b["Mvalues/s"]
print(f"{'mode':42} {'ggml':>10} {'lowbit':>10} {'ratio':>7}")
for t in sys.argv[3:]:
    for m in ("quantize", "quantize_weighted", "dequantize", "dequantize_to_row_buffer"):
        key = f"{m}/{t}"
        if key in ggml and key in lowbit:
            print(f"{key:42} {ggml[key]:10.3f} {lowbit[key]:10.3f} {lowbit[key] / ggml[key]:6.2f}x")
PY
