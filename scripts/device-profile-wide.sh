#!/usr/bin/env bash
# Where the wide 4-bit kernel (matmul_4bit_wide.cuh) waits, in one device call after `scripts/device-check.sh build`
# (carry [".deps"]): ncu's full set on one product each of nf4 + double quant and q4_K, 14336x4096, at TOKENS (default
# "64 128": tiles of 64 without, of 128 with the producer warp), then the SASS instructions with the most warp-stall
# samples and the stall reasons summed over the kernel. Raw reports stay in $OUT (or /tmp) as wide-*.ncu-rep.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-/tmp}
cmake --build build-device --target lowbit_cuda_bench > /tmp/profile-build.log 2>&1 || { grep -E "error" -A3 /tmp/profile-build.log | head -20; exit 1; }
bench=build-device/bench/lowbit_cuda_bench
for tokens in ${TOKENS:-64 128}; do
  # --4bit-only --tokens N launches, per shape: cuBLAS, then the library's nf4 and q4_K products (the wide kernel from
  # 48 to 256 tokens), each once per weight set and 35 times more from graphs; the first wide launch of each format.
  for format in Bnb4bitFormat Q4KFormat; do
    name="wide-$format-$tokens"
    timeout 200 ncu --clock-control none --kernel-name-base demangled -k "regex:wide_matmul_kernel<.*$format" -c 1 \
      --set full --import-source no -o "$out/$name" -f "$bench" --4bit-only --tokens "$tokens" > "/tmp/$name.log" 2>&1 ||
      { tail -5 "/tmp/$name.log"; continue; }
    echo "## $format, $tokens tokens (14336x4096)"
    ncu -i "$out/$name.ncu-rep" --page details --print-units base 2>&1 |
      grep -E "Duration|DRAM Throughput|L2 Cache Throughput|Compute \(SM\) Throughput|Registers Per|Achieved Occupancy|Warp Cycles Per Issued|Issue Slots Busy|Executed Ipc A|Stall|Shared Memory|Bank" |
      cut -c1-160 | head -40
    ncu -i "$out/$name.ncu-rep" --page source --csv --print-source sass > "/tmp/$name-sass.csv" 2>&1
    python3 - "/tmp/$name-sass.csv" <<'PY'
import csv, sys
lines = open(sys.argv[1]).read().splitlines()
start = next((i for i, l in enumerate(lines) if l.startswith('"#') or l.startswith('"Address')), None)
if start is None:
    sys.exit("no SASS table in ncu's output")
rows = list(csv.DictReader(lines[start:]))
samples = next((k for k in rows[0] if "Warp Stall Sampling (All" in k), None)
source = next((k for k in rows[0] if k.strip('"') == "Source"), None)
if not samples or not source:
    sys.exit(f"columns not found: {list(rows[0])[:12]}")
value = lambda r: float((r.get(samples) or "0").replace(",", "") or 0)
total = sum(value(r) for r in rows) or 1.0
print(f"{len(rows)} SASS instructions, {total:.0f} stall samples; the 20 with the most:")
for r in sorted(rows, key=value, reverse=True)[:20]:
    print(f"  {100 * value(r) / total:5.1f}%  {r[source][:100]}")
by_opcode = {}
for r in rows:
    opcode = r[source].split()[0] if r[source].split() else "?"
    if opcode.startswith("@"):
        opcode = r[source].split()[1]
    by_opcode[opcode.split(".")[0]] = by_opcode.get(opcode.split(".")[0], 0) + value(r)
print("by opcode: " + ", ".join(f"{k} {100 * v / total:.0f}%" for k, v in sorted(by_opcode.items(), key=lambda kv: -kv[1])[:12]))
PY
  done
done
