#!/usr/bin/env bash
# The speed table of docs/benchmarks.md ("The model on the GPU"), in one device call: lowbit's GPU runtime on
# a synthetic Llama-3-8B-shaped model made here (scripts/synthetic_llama.py), quantized here by lowbit, beside
# the references on the same weights in the same call: llama.cpp's CUDA build (llama-perplexity and
# llama-bench on the same GGUFs), transformers in bf16, and transformers + bitsandbytes on the nf4 checkpoint
# lowbit writes; and the copy bandwidth.
#   scripts/device-speed.sh LOWBIT DATA_DIR [LLAMA_CPP_BIN]
#       LAYERS=32  FORMATS="bf16 Q4_K_M q8_0 nf4 q4_K Q2_K" (in this order; nf4 means nf4 with double quant;
#                  empty: no 8B shape at all)
#       CHUNKS=32  windows of 512 for the perplexity runs
#       SMOL=0 leaves out SmolLM2's shape (SMOL_PLAN=0 its probed plan), HF_BF16=0 transformers bf16 (to split the table over two calls)
# LLAMA_CPP_BIN: llama.cpp's CUDA tools (llama-perplexity, llama-bench) and their libraries, built for sm_90;
# without it the llama.cpp columns stay empty. bitsandbytes must be importable for the nf4 reference
# (BNB_WHEEL=1 scripts/device-deps.sh; PYTHONPATH=.deps/py).
# SmolLM2-135M's shape first, when DATA_DIR has smollm2-135m-metadata.gguf (SmolLM2's GGUF metadata alone, 1.8 MB:
#   python3 -c "import sys; sys.path.insert(0, 'scripts'); import synthetic_llama as s; \
#     s.write_gguf('.devdata/data/smollm2-135m-metadata.gguf', s.read_metadata('SmolLM2-135M-Instruct.Q4_1.gguf'), [])"
# ): its shape and tokenizer with random bf16 weights (scripts/synthetic_llama.py --shape source); eval over the
# whole WikiText-2 test text and a probed plan of 4 windows, each timed whole (issue 14's 30 s and 2 min goals).
# Per format: lowbit eval's wall time over CHUNKS windows (loading included) and `lowbit bench --model`
# (prefill of 512, eval's own pass of 16 × 512, greedy decoding of 128 at batch 1 through CUDA graphs);
# llama-perplexity's wall time (loading included; this llama.cpp prints no timing of its own); llama-bench pp512 and
# tg128. Rows print as they are measured; everything also lands in $OUT/speed.md when $OUT is set.
set -uo pipefail
lowbit=$1 data=$2 llama=${3:-}
layers=${LAYERS:-32}
formats=${FORMATS-"bf16 Q4_K_M q8_0 nf4 q4_K Q2_K"}
chunks=${CHUNKS:-32}
out=${OUT:-/tmp}/speed.md
work=$(mktemp -d)
text="$data/wikitext2_test_hf_nonempty_crlf.raw"
log() { echo "$*" | tee -a "$out"; }
seconds() { python3 -c "print(f'{$2 - $1:.2f}')"; }
[ -n "$llama" ] && export LD_LIBRARY_PATH="$llama:${LD_LIBRARY_PATH:-}"

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

if [ -f "$data/smollm2-135m-metadata.gguf" ] && [ "${SMOL:-1}" = 1 ]; then
  python3 scripts/synthetic_llama.py --shape source "$data/smollm2-135m-metadata.gguf" "$work/smol.gguf" 2>&1 | grep -v Warning
  start=$(date +%s.%N)
  "$lowbit" eval "$work/smol.gguf" --text "$text" --ctx 512 --device cuda --quiet --json > "$work/smol-eval.json"
  end=$(date +%s.%N)
  log "SmolLM2-135M shape (random bf16 weights, its tokenizer): eval of the whole WikiText-2 test text in $(seconds "$start" "$end") s: $(tr -d '\n ' < "$work/smol-eval.json")"
  [ "${SMOL_PLAN:-1}" = 1 ] && start=$(date +%s.%N) && timeout 240 "$lowbit" plan "$work/smol.gguf" --bpw 4.5 --text "$text" --probe-chunks 4 --device cuda -o "$work/smol-plan.json" --quiet --json > "$work/smol-plan-out.json"
  [ "${SMOL_PLAN:-1}" = 1 ] && end=$(date +%s.%N) && log "SmolLM2-135M shape: probed plan (importance matrix on the text, then the output-KLD probe on 4 windows) in $(seconds "$start" "$end") s: $(python3 -c "import json; j=json.load(open('$work/smol-plan.json')); print(j.get('loss_measure'))")"
  "$lowbit" bench --model "$work/smol.gguf" --device cuda --prompt 512 --gen 128 | tee -a "$out"
  rm -f "$work/smol.gguf"
fi

[ -n "$formats" ] || { rm -rf "$work"; exit 0; }  # FORMATS="": SmolLM2's shape alone

# The synthetic 8B shape, and transformers bf16 timed on the same weights. Its vocabulary: SmolLM2's 49,152
# tokens where its metadata travelled (the output layer's share of the work nearer Llama-3's), else the 12M's bytes.
vocabulary="$data/lowbit-bytes-12M-bf16.gguf"
[ -f "$data/smollm2-135m-metadata.gguf" ] && vocabulary="$data/smollm2-135m-metadata.gguf"
# Both perplexity tools read only the text their CHUNKS windows need (4 KB a window covers 512 tokens of either
# vocabulary): llama.cpp tokenizes the whole file it is given first, and a byte vocabulary takes it minutes.
rows_text="$work/rows.txt"
head -c $((chunks * 4096)) "$text" > "$rows_text"
reference=(--hf-reference "$work/hf-bf16.json")
[ "${HF_BF16:-1}" = 1 ] || reference=()
python3 scripts/synthetic_llama.py "$vocabulary" "$work/s8b.gguf" --layers "$layers" "${reference[@]}" 2>&1 | grep -v Warning
[ -f "$work/hf-bf16.json" ] && log "transformers bf16: $(cat "$work/hf-bf16.json")"
log ""
log "| format | weights MiB | lowbit eval wall tok/s ($chunks × 512, ppl) | llama-perplexity wall tok/s (s, ppl) | lowbit eval pass tok/s (16 × 512) | lowbit prefill 512 | llama-bench pp512 | lowbit decode tok/s | llama-bench tg128 | lowbit decode of copy bw | peak GPU MiB | lowbit load s: read + check, upload |"
log "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"

# One row: `model` is a GGUF (eval, llama.cpp) or a directory (bench only).
row() {
  local name=$1 model=$2 start end eval_cell="–" llama_ppl="–" llama_pp="–" llama_tg="–"
  if [[ $model == *.gguf ]]; then
    start=$(date +%s.%N)
    if timeout 120 "$lowbit" eval "$model" --text "$rows_text" --ctx 512 --chunks "$chunks" --device cuda --quiet --json > "$work/eval.json"; then
      end=$(date +%s.%N)
      eval_cell=$(python3 -c "import json; j=json.load(open('$work/eval.json')); s=$end-$start; print(f\"{j['chunks']*512/s:.0f} ({s:.1f} s, {j['ppl']:.4f})\")")
    fi
    if [ -n "$llama" ]; then
      start=$(date +%s.%N)
      if timeout 120 "$llama/llama-perplexity" -m "$model" -f "$rows_text" -c 512 --chunks "$chunks" -ngl 99 > "$work/ppl.log" 2>&1; then
        end=$(date +%s.%N)
        llama_ppl=$(python3 - "$work/ppl.log" "$(seconds "$start" "$end")" "$chunks" <<'PY'
import re, sys
text, s, chunks = open(sys.argv[1]).read(), float(sys.argv[2]), int(sys.argv[3])
ppl = re.search(r"Final estimate: PPL = ([0-9.]+)", text)
print(f"{chunks*512/s:.0f} ({s:.1f} s, {ppl.group(1) if ppl else '?'})")
PY
)
      else
        llama_ppl="failed"; tail -5 "$work/ppl.log"
      fi
      if timeout 150 "$llama/llama-bench" -m "$model" -p 512 -n 128 -ngl 99 -r 3 -o json > "$work/lb.json" 2> "$work/lb.log"; then
        read -r llama_pp llama_tg < <(python3 -c "
import json; rows = json.load(open('$work/lb.json'))
pp = [r['avg_ts'] for r in rows if r['n_prompt'] > 0 and r['n_gen'] == 0]; tg = [r['avg_ts'] for r in rows if r['n_gen'] > 0]
print(f'{pp[0]:.0f}' if pp else '?', f'{tg[0]:.1f}' if tg else '?')")
      else
        llama_pp="failed"; tail -5 "$work/lb.log"
      fi
    fi
  fi
  timeout 150 "$lowbit" bench --model "$model" --device cuda --prompt 512 --gen 128 --json > "$work/bench.json" || { log "| $name | bench failed |"; return; }
  python3 - "$name" "$work/bench.json" "$bandwidth" "$eval_cell" "$llama_ppl" "$llama_pp" "$llama_tg" <<'PY' | tee -a "$out"
import json, sys
name, path, bw, eval_cell, llama_ppl, llama_pp, llama_tg = sys.argv[1], sys.argv[2], float(sys.argv[3]), *sys.argv[4:]
j = json.load(open(path))
gbs = j["decode_weight_bytes"] * j["decode_tokens_per_s"] / 1e9  # what a step reads (q4_K: its fused layout alone)
print(f"| {name} | {j['weight_bytes']/2**20:.0f} | {eval_cell} | {llama_ppl} | {j['forward_tokens_per_s']:.0f} | {j['prefill_tokens_per_s']:.0f} | {llama_pp} "
      f"| {j['decode_tokens_per_s']:.1f} | {llama_tg} | {gbs/bw:.2f} | {j['peak_gpu_memory_bytes']/2**20:.0f} "
      f"| {j['load_seconds']:.2f} + {j['upload_seconds']:.2f} |")
PY
}

for f in $formats; do
  case $f in
    bf16) row "bf16" "$work/s8b.gguf" ;;
    nf4)
      # transformers + bitsandbytes on the checkpoint lowbit writes: the same nf4 bytes on both sides.
      timeout 200 "$lowbit" dequantize "$work/s8b.gguf" -o "$work/hf" --dtype bf16 --quiet &&
        timeout 200 "$lowbit" quantize "$work/hf" -o "$work/nf4" --format nf4 --double-quant --quiet || { log "| nf4 | quantize failed |"; continue; }
      rm -rf "$work/hf"
      row "nf4 + double quant" "$work/nf4"
      python3 scripts/synthetic_llama.py --time-checkpoint "$work/nf4" "$work/hf-nf4.json" 2>&1 | grep -v -i warn
      log "transformers + bitsandbytes on lowbit's nf4 checkpoint: $(cat "$work/hf-nf4.json" 2>/dev/null)"
      rm -rf "$work/nf4" ;;
    *)
      if [[ $f == Q* ]]; then how=(--mix "$f"); else how=(--format "$f"); fi
      start=$(date +%s)
      timeout 150 "$lowbit" quantize "$work/s8b.gguf" -o "$work/s8b-$f.gguf" "${how[@]}" --quiet || { log "| $f | quantize failed |"; continue; }
      echo "quantized $f in $(( $(date +%s) - start )) s"
      row "$f" "$work/s8b-$f.gguf"
      rm -f "$work/s8b-$f.gguf" ;;
  esac
done
rm -rf "$work"
