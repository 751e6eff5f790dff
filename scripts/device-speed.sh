#!/usr/bin/env bash
# The speed table of docs/benchmarks.md ("The model on the GPU"), in one device call: lowbit's GPU runtime
# (eval throughput at context 512, prefill and batch-1 decoding from `lowbit bench --model`) on the real
# models that travel and on a synthetic Llama-3-8B-shaped model made here (scripts/synthetic_llama.py),
# beside transformers bf16 on the same weights and the copy bandwidth measured in the same run.
#   scripts/device-speed.sh LOWBIT DATA_DIR       (LAYERS=32 FORMATS="q8_0 Q4_K_M q4_K" by default)
# Rows print as they are measured; everything also lands in $OUT/speed.md when $OUT is set.
set -uo pipefail
lowbit=$1 data=$2
layers=${LAYERS:-32}
formats=${FORMATS:-"q8_0 Q4_K_M q4_K"}
out=${OUT:-/tmp}/speed.md
work=$(mktemp -d)
text="$data/wikitext2_test_hf_nonempty_crlf.raw"
log() { echo "$*" | tee -a "$out"; }

bandwidth=$(python3 -c '
import torch
x = torch.empty(1 << 30, dtype=torch.uint8, device="cuda"); y = torch.empty_like(x)
for _ in range(3): y.copy_(x)
s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
s.record()
for _ in range(20): y.copy_(x)
e.record(); torch.cuda.synchronize()
print(f"{2 * 20 * x.numel() / (s.elapsed_time(e) / 1e3) / 1e9:.0f}")')
log "device: $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader); copy bandwidth ${bandwidth} GB/s (read + written)"
log ""
log "| model | format | weights MiB | eval tok/s (ctx 512) | prefill tok/s (512) | decode tok/s (batch 1) | decode GB/s of weights | of copy bw | peak GPU MiB |"
log "|---|---|--:|--:|--:|--:|--:|--:|--:|"

# One row: eval over `chunks` windows of 512 (wall time of the whole command, loading included, and the
# runtime's own tokens/s), then bench --model.
row() {
  local name=$1 model=$2 chunks=$3
  local start end eval_tps bench
  start=$(date +%s.%N)
  "$lowbit" eval "$model" --text "$text" --ctx 512 --chunks "$chunks" --device cuda --quiet --json > "$work/eval.json" || { log "| $name | eval failed |"; return; }
  end=$(date +%s.%N)
  eval_tps=$(python3 -c "import json,sys; j=json.load(open('$work/eval.json')); print(f\"{j['chunks']*512/($end-$start):.0f} (ppl {j['ppl']:.3f}, {$end-$start:.1f} s)\")")
  "$lowbit" bench --model "$model" --device cuda --prompt 512 --gen 128 --json > "$work/bench.json" || { log "| $name | bench failed |"; return; }
  python3 - "$name" "$work/bench.json" "$eval_tps" "$bandwidth" <<'PY' | tee -a "$out"
import json, sys
name, path, eval_tps, bw = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
j = json.load(open(path))
gbs = j["weight_bytes"] * j["decode_tokens_per_s"] / 1e9
fmt = name.split(" ")[-1]
print(f"| {name.rsplit(' ', 1)[0]} | {fmt} | {j['weight_bytes']/2**20:.0f} | {eval_tps} | {j['prefill_tokens_per_s']:.0f} | {j['decode_tokens_per_s']:.1f} | {gbs:.0f} | {gbs/bw:.2f} | {j['peak_gpu_memory_bytes']/2**20:.0f} |")
PY
}

row "lowbit-bytes-12M bf16" "$data/lowbit-bytes-12M-bf16.gguf" 0
for m in "$data"/*.gguf; do
  case "$m" in *bytes-12M*|*stories*) continue;; esac
  row "$(basename "$m" .gguf) gguf" "$m" 64
done

# The synthetic 8B shape: generated, timed with transformers, quantized, each format timed by lowbit.
python3 scripts/synthetic_llama.py "$data/lowbit-bytes-12M-bf16.gguf" "$work/s8b.gguf" --layers "$layers" --hf-reference "$work/hf.json" 2>&1 | grep -v Warning
row "synthetic-8B ($layers layers) bf16" "$work/s8b.gguf" 16
for f in $formats; do
  if [[ $f == Q* ]]; then how=(--mix "$f"); else how=(--format "$f"); fi
  start=$(date +%s)
  timeout "${QUANTIZE_TIMEOUT:-150}" "$lowbit" quantize "$work/s8b.gguf" -o "$work/s8b-$f.gguf" "${how[@]}" --quiet || { log "| synthetic-8B | $f quantize failed |"; continue; }
  echo "quantized $f in $(( $(date +%s) - start )) s"
  row "synthetic-8B ($layers layers) $f" "$work/s8b-$f.gguf" 16
  rm -f "$work/s8b-$f.gguf"
done
log ""
log "transformers bf16 on the same synthetic weights: $(cat "$work/hf.json" 2>/dev/null)"
rm -rf "$work"
