#!/usr/bin/env bash
# lowbit's main job on its default model: quantize SmolLM2-135M-Instruct to several formats, evaluate
# each against the base (the model's own dequantized weights) on an English text, and print a table:
# format, bits per weight, size, perplexity, KL-divergence from the base, top-1 agreement.
# Usage: scripts/main-job.sh [TEXT] (default: /usr/share/common-licenses/GPL-3); CHUNKS=N windows of 512.
set -euo pipefail
cd "$(dirname "$0")/.."
lowbit=build/lowbit
text=${1:-/usr/share/common-licenses/GPL-3}
chunks=${CHUNKS:-8}
model=$(scripts/fetch-default-model.sh)
work=$(mktemp -d "${TMPDIR:-/tmp}/lowbit-main-job.XXXXXX")
trap 'rm -rf "$work"' EXIT

eval_args=(--text "$text" --ctx 512 --chunks "$chunks" --json --quiet)
# "BPW BYTES" of a model, from lowbit inspect.
size_of() { "$lowbit" inspect --json "$1" | python3 -c 'import json,sys; t=json.load(sys.stdin)["total"]; print(t["bpw"], t["bytes"])'; }
echo "base: $model, scoring $chunks windows of 512 tokens of $text" >&2
"$lowbit" eval "$model" "${eval_args[@]}" --save-logits "$work/base.logits" >"$work/base.json"

rows=("base (q4_1)|$(size_of "$model")|$work/base.json")
for spec in "q8_0:--format q8_0" "Q4_K_M:--mix Q4_K_M" "q4_K:--format q4_K" "q2_K:--format q2_K"; do
  name=${spec%%:*}
  echo "quantizing and evaluating $name" >&2
  "$lowbit" quantize "$model" -o "$work/$name.gguf" ${spec#*:} --quiet
  "$lowbit" eval "$work/$name.gguf" "${eval_args[@]}" --kld-base "$work/base.logits" >"$work/$name.json"
  rows+=("$name|$(size_of "$work/$name.gguf")|$work/$name.json")
done
echo "quantizing and evaluating nf4 (bitsandbytes, double quant)" >&2
"$lowbit" dequantize "$model" -o "$work/hf" --dtype bf16 --quiet
"$lowbit" quantize "$work/hf" -o "$work/nf4" --format nf4 --double-quant --quiet
"$lowbit" eval "$work/nf4" "${eval_args[@]}" --kld-base "$work/base.logits" >"$work/nf4.json"
rows+=("nf4|$(size_of "$work/nf4")|$work/nf4.json")

printf '%s\n' "${rows[@]}" | python3 scripts/main_job_table.py
