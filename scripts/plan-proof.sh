#!/usr/bin/env bash
# The planner against llama.cpp's own mixes at equal size: for each mix, quantize the model with it,
# then with a plan for the same bits per weight, and evaluate both against the base on a text the model
# did not train on (KL-divergence, context 512). Prints a table; with IMATRIX_TEXT, an importance
# matrix measured on that text feeds both the mixes and the plans; with PROBE_TEXT, the plans measure
# each candidate's loss as the output KL-divergence on PROBE_CHUNKS (default 4) windows of that text
# (--probe-text), which must not be the evaluation text. UNIFORM="q4_K q3_K" adds, for each type, the
# model quantized to that one type (llama-quantize --pure) against a plan of exactly its size.
# EXCLUDE="q4_1" keeps formats out of the plans: a model already quantized to one (the default model
# is a Q4_1 file) would get it back without error, which tests nothing. With GPTQ_TEXT, Hessians collected
# on that text (32 windows) make the plans GPTQ's (plan --gptq: candidates measured as GPTQ writes them,
# the model quantized so); the mixes stay llama-quantize's, rounded with the importance matrix.
# Usage: [LOWBIT=build/lowbit] [MIXES="Q4_K_M ..."] [UNIFORM="q4_K ..."] [EXCLUDE="q4_1 ..."] [IMATRIX_TEXT=F]
#        [PROBE_TEXT=F [PROBE_CHUNKS=4]] [GPTQ_TEXT=F] scripts/plan-proof.sh [MODEL] [TEXT]
#        (defaults: ../shared/data/lowbit-bytes-12M-bf16.gguf, GPL-3)
set -euo pipefail
cd "$(dirname "$0")/.."
lowbit=${LOWBIT:-build/lowbit}
model=${1:-../shared/data/lowbit-bytes-12M-bf16.gguf}
text=${2:-/usr/share/common-licenses/GPL-3}
chunks=${CHUNKS:-16}
work=$(mktemp -d "${TMPDIR:-/tmp}/lowbit-plan-proof.XXXXXX")
trap 'rm -rf "$work"' EXIT
imatrix=() plan_flags=()
if [ -n "${PROBE_TEXT:-}" ]; then
  if [ "$(realpath "$PROBE_TEXT")" = "$(realpath "$text")" ]; then
    echo "PROBE_TEXT is the evaluation text: calibrate on another" >&2
    exit 2
  fi
  plan_flags=(--probe-text "$PROBE_TEXT" --probe-chunks "${PROBE_CHUNKS:-4}")
fi
if [ -n "${EXCLUDE:-}" ]; then
  EXCLUDE=$EXCLUDE python3 -c '
import json, os
print(json.dumps({"rules": [{"match": "*", "deny": os.environ["EXCLUDE"].split()}]}))' >"$work/rules.json"
  plan_flags+=(--rules "$work/rules.json")
fi
if [ -n "${GPTQ_TEXT:-}" ]; then
  "$lowbit" hessian "$model" --text "$GPTQ_TEXT" --chunks 32 -o "$work/hessian.gguf" --quiet
  plan_flags+=(--gptq "$work/hessian.gguf")
fi
if [ -n "${IMATRIX_TEXT:-}" ]; then
  "$lowbit" imatrix "$model" --text "$IMATRIX_TEXT" --chunks 32 -o "$work/imatrix.gguf" --quiet
  imatrix=(--imatrix "$work/imatrix.gguf")
fi
"$lowbit" eval "$model" --text "$text" --chunks "$chunks" --save-logits "$work/base.logits" --quiet >/dev/null
row() {  # name file
  local bpw kld
  bpw=$("$lowbit" inspect --json "$2" | python3 -c 'import json,sys; print("%.3f" % json.load(sys.stdin)["total"]["bpw"])')
  kld=$("$lowbit" eval "$2" --text "$text" --chunks "$chunks" --kld-base "$work/base.logits" --json --quiet |
        python3 -c 'import json,sys; r=json.load(sys.stdin); print("%.4f %.5f %.2f%%" % (r["ppl"], r["kld"]["mean"], 100*r["top1"]))')
  printf '%-22s %6s %8s %9s %7s\n' "$1" "$bpw" $kld
}
printf '%-22s %6s %8s %9s %7s\n' format bpw ppl "KLD mean" top-1
against_plan() {  # label reference.gguf: a plan of exactly the reference's size
  local bpw start
  bpw=$("$lowbit" inspect --json "$2" | python3 -c 'import json,sys; print(json.load(sys.stdin)["total"]["bpw"])')
  start=$SECONDS
  "$lowbit" quantize "$model" -o "$work/plan-$1.gguf" --bpw "$bpw" "${imatrix[@]}" "${plan_flags[@]}" --quiet
  row "lowbit plan @ $1" "$work/plan-$1.gguf"
  echo "  (planned and quantized in $((SECONDS - start)) s)" >&2
}
for mix in ${MIXES-Q4_K_M Q3_K_M Q2_K}; do
  "$lowbit" quantize "$model" -o "$work/$mix.gguf" --mix "$mix" "${imatrix[@]}" --quiet
  row "llama.cpp $mix" "$work/$mix.gguf"
  against_plan "$mix" "$work/$mix.gguf"
done
for type in ${UNIFORM:-}; do
  "$lowbit" quantize "$model" -o "$work/$type.gguf" --format "$type" "${imatrix[@]}" --quiet
  row "uniform $type" "$work/$type.gguf"
  against_plan "$type" "$work/$type.gguf"
done
