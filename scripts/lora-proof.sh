#!/usr/bin/env bash
# What merging an adapter costs, measured against what was trained ("4-bit base + adapter", evaluated
# unmerged by lowbit eval --base-lora): a QLoRA adapter trained on the CPU (PEFT + bitsandbytes' CPU
# 4-bit backend) on lowbit-bpe-50M, then exported three ways — merged into the original weights then
# Q4_K_M, merged into the dequantized weights then Q4_K_M, merged into the original weights kept in bf16.
# Usage: scripts/lora-proof.sh LOWBIT PYTHON WORKDIR [STEPS]   (PYTHON: torch, transformers, peft, bitsandbytes)
set -euo pipefail
lowbit=$1 python=$2 work=$3 steps=${4:-200}
here=$(cd "$(dirname "$0")/.." && pwd)
model=$here/../shared/data/lowbit-bpe-50M
text=/usr/share/common-licenses/GPL-3   # licence texts were kept out of the model's training data
mkdir -p "$work"
head -c "$(( $(wc -c <"$text") * 8 / 10 ))" "$text" >"$work/train.txt"
tail -c "+$(( $(wc -c <"$text") * 8 / 10 + 1 ))" "$text" >"$work/heldout.txt"
"$python" "$here/tests/interop/qlora_train.py" "$model" "$work/train.txt" "$work/adapter" "$steps" 2>/dev/null | tail -1
"$lowbit" quantize "$model" -o "$work/base-nf4" --format nf4 --double-quant --quiet --force 2>/dev/null || \
  "$lowbit" quantize "$model" -o "$work/base-nf4" --format nf4 --double-quant --quiet
"$lowbit" merge "$model" --lora "$work/adapter" -o "$work/a-original-q4km.gguf" --mix Q4_K_M --quiet
"$lowbit" merge "$model" --lora "$work/adapter" --into dequantized -o "$work/b-dequantized-q4km.gguf" --mix Q4_K_M --quiet
"$lowbit" merge "$model" --lora "$work/adapter" -o "$work/c-original-bf16.gguf" --format bf16 --quiet
"$lowbit" merge "$model" --lora "$work/adapter" --into dequantized -o "$work/d-dequantized-bf16.gguf" --format bf16 --quiet
echo "| export | KLD mean vs 4-bit base + adapter | p99 | top-1 | ppl (base+adapter ppl) |"
echo "| --- | ---: | ---: | ---: | ---: |"
for m in a-original-q4km b-dequantized-q4km c-original-bf16 d-dequantized-bf16; do
  "$lowbit" eval "$work/$m.gguf" --text "$work/heldout.txt" --base "$work/base-nf4" --base-lora "$work/adapter" --json --quiet >"$work/$m.json"
  "$python" -c 'import json,sys; j=json.load(open(sys.argv[1])); print(f"| {sys.argv[2]} | {j[\"kld\"][\"mean\"]:.5f} | {j[\"kld\"][\"p99\"]:.4f} | {100*j[\"top1\"]:.2f}% | {j[\"ppl\"]:.3f} ({j[\"base_ppl\"]:.3f}) |")' "$work/$m.json" "$m"
done
