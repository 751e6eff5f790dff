#!/usr/bin/env bash
# What merging an adapter costs, measured against what was trained ("4-bit base + adapter", evaluated
# unmerged by lowbit eval --base-lora): a QLoRA adapter trained on the CPU (PEFT + bitsandbytes' CPU
# 4-bit backend) on lowbit-bpe-50M, then exported four ways — merged into the original weights or into the
# dequantized weights (--into), each then Q4_K_M or kept in bf16.
# Usage: scripts/lora-proof.sh LOWBIT PYTHON WORKDIR [STEPS [MODEL_DIR [TEXT]]]   (PYTHON: torch, transformers, peft, bitsandbytes)
# Training runs on the CPU wherever the script runs; lowbit's evals use the GPU where there is one.
# 200 steps took longer than 2.5 hours on this project's 2-core VM: docs/benchmarks.md's table was made
# on the lent GPU machine's 16 cores, the model carried there in two parts (see "LoRA merge" there).
set -euo pipefail
lowbit=$1 python=$2 work=$3 steps=${4:-200}
here=$(cd "$(dirname "$0")/.." && pwd)
model=${5:-$here/../shared/data/lowbit-bpe-50M}
# The adapter learns a text the model knows less well (Wikipedia; it was trained on technical manuals
# and TinyStories): its first 80% trains, its last 20% is held out.
text=${6:-$here/../shared/data/wikitext2_test_hf_nonempty_crlf.raw}
mkdir -p "$work"
head -c "$(( $(wc -c <"$text") * 8 / 10 ))" "$text" >"$work/train.txt"
tail -c "+$(( $(wc -c <"$text") * 8 / 10 + 1 ))" "$text" >"$work/heldout.txt"
# An adapter already in WORKDIR is kept (training is the slow part; its log is WORKDIR/train.log).
[ -f "$work/adapter/adapter_config.json" ] ||
  "$python" "$here/tests/interop/qlora_train.py" "$model" "$work/train.txt" "$work/adapter" "$steps" 2>"$work/train.log" | tail -1
# WORKDIR is the script's own: a second run replaces what the first wrote (--force).
"$lowbit" quantize "$model" -o "$work/base-nf4" --format nf4 --double-quant --quiet --force
"$lowbit" merge "$model" --lora "$work/adapter" -o "$work/a-original-q4km.gguf" --mix Q4_K_M --quiet --force
"$lowbit" merge "$model" --lora "$work/adapter" --into dequantized -o "$work/b-dequantized-q4km.gguf" --mix Q4_K_M --quiet --force
"$lowbit" merge "$model" --lora "$work/adapter" -o "$work/c-original-bf16.gguf" --format bf16 --quiet --force
"$lowbit" merge "$model" --lora "$work/adapter" --into dequantized -o "$work/d-dequantized-bf16.gguf" --format bf16 --quiet --force
# Two texts: the held-out fifth of the adapter's text (what it learned) and TinyStories (what the base
# model knows), 16 windows of 512 tokens each, each export against the 4-bit base + adapter evaluated unmerged.
general=$here/../shared/data/tinystories_valid_first1000.txt
echo "| export | text | KLD mean vs 4-bit base + adapter | p99 | top-1 | ppl (base + adapter) |"
echo "| --- | --- | ---: | ---: | ---: | ---: |"
# The first row, the model without its adapter, shows how far the adapter moved it.
for m in no-adapter a-original-q4km b-dequantized-q4km c-original-bf16 d-dequantized-bf16; do
  path=$work/$m.gguf
  [ $m = no-adapter ] && path=$model
  for t in heldout general; do
    eval_text=$general
    [ $t = heldout ] && eval_text=$work/heldout.txt
    "$lowbit" eval "$path" --text "$eval_text" --chunks 16 --base "$work/base-nf4" --base-lora "$work/adapter" --json --quiet >"$work/$m.$t.json"
    "$python" -c 'import json, sys; j = json.load(open(sys.argv[1])); k = j["kld"]
print("| %s | %s | %.5f | %.4f | %.2f%% | %.3f (%.3f) |" % (sys.argv[2], sys.argv[3], k["mean"], k["p99"], 100 * j["top1"], j["ppl"], j["base_ppl"]))' \
      "$work/$m.$t.json" "$m" "$t"
  done
done
