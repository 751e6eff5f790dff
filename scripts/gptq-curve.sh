#!/usr/bin/env bash
# Issue 19's curve: KL-divergence from the base against bits per weight for three ways of spending the
# same bytes, all with one importance matrix and one Hessian file measured on the same calibration text:
#   - llama.cpp's mixes with the importance matrix (written by lowbit, byte for byte llama-quantize's);
#   - lowbit's plan for exactly each mix's size (importance-weighted relative error);
#   - lowbit's plan --gptq for that size (candidates written and measured as GPTQ writes them), quantized
#     with GPTQ.
# KLD over CHUNKS (default 16) windows of 512 tokens of TEXT, a text neither the model nor the calibration
# saw, the same windows and base logits for every point. Prints a markdown table and writes the SVG.
# SIZES="3.0 3.5" adds plan points at those bits per weight with no mix beside them: on a model whose rows fit
# no k-quant (SmolLM2: 576 columns) llama.cpp's mixes fall back to 4-8 bit types, and no mix lands below ~5 bpw.
# Usage: [LOWBIT=build/lowbit] [MIXES="Q2_K Q3_K_S ..."] [SIZES="..."] [CHUNKS=16]
#        scripts/gptq-curve.sh OUT.svg [MODEL] [CALIBRATION] [TEXT]
#        (defaults: ../shared/data/lowbit-bytes-12M-bf16.gguf, WikiText-2 test, GPL-3)
set -euo pipefail
cd "$(dirname "$0")/.."
lowbit=${LOWBIT:-build/lowbit}
svg=${1:?usage: scripts/gptq-curve.sh OUT.svg [MODEL] [CALIBRATION] [TEXT]}
model=${2:-../shared/data/lowbit-bytes-12M-bf16.gguf}
calibration=${3:-../shared/data/wikitext2_test_hf_nonempty_crlf.raw}
text=${4:-/usr/share/common-licenses/GPL-3}
mixes=${MIXES-Q2_K Q3_K_S Q3_K_M Q3_K_L Q4_K_S Q4_K_M Q5_K_S Q5_K_M Q6_K}
work=$(mktemp -d "${TMPDIR:-/tmp}/lowbit-gptq-curve.XXXXXX")
trap 'rm -rf "$work"' EXIT
"$lowbit" imatrix "$model" --text "$calibration" --chunks 32 --device cpu -o "$work/i.gguf" --quiet
"$lowbit" hessian "$model" --text "$calibration" --chunks 32 -o "$work/h.gguf" --quiet
"$lowbit" eval "$model" --text "$text" --chunks "${CHUNKS:-16}" --device cpu --save-logits "$work/base.logits" --quiet >/dev/null

# One point: the file's bits per weight (from quantize --json) and its KLD, as a JSON line.
point() {  # series label quantize-args...
  local series=$1 label=$2
  shift 2
  "$lowbit" quantize "$model" -o "$work/q.gguf" --force --json --quiet "$@" >"$work/q.json"
  "$lowbit" eval "$work/q.gguf" --text "$text" --chunks "${CHUNKS:-16}" --kld-base "$work/base.logits" --device cpu --json >"$work/e.json"
  python3 - "$series" "$label" "$work/q.json" "$work/e.json" <<'PY' | tee -a "$work/points.jsonl"
import json, sys
series, label, q, e = sys.argv[1], sys.argv[2], json.load(open(sys.argv[3])), json.load(open(sys.argv[4]))
print(json.dumps({"series": series, "label": label, "bpw": q["total"]["bpw"], "kld": e["kld"]["mean"], "ppl": e["ppl"], "top1": e["top1"]}))
PY
}

plans() {  # label bpw: lowbit's plan and plan --gptq for that size
  "$lowbit" plan "$model" --bpw "$2" --imatrix "$work/i.gguf" -o "$work/p.json" --force --quiet
  point "lowbit plan + imatrix" "$1" --plan "$work/p.json" >&2
  "$lowbit" plan "$model" --bpw "$2" --imatrix "$work/i.gguf" --gptq "$work/h.gguf" -o "$work/g.json" --force --quiet
  point "lowbit plan --gptq" "$1" --plan "$work/g.json" >&2
}
# The series' names, in the order the table and the SVG give them.
printf '%s\n' '{"series": "llama.cpp mix + imatrix"}' '{"series": "lowbit plan + imatrix"}' '{"series": "lowbit plan --gptq"}' > "$work/points.jsonl"
for mix in $mixes; do
  point "llama.cpp mix + imatrix" "$mix" --mix "$mix" --imatrix "$work/i.gguf" >&2
  plans "$mix" "$(tail -1 "$work/points.jsonl" | python3 -c 'import json,sys; print(json.load(sys.stdin)["bpw"])')"
done
for size in ${SIZES:-}; do plans "$size bpw" "$size"; done

python3 - "$work/points.jsonl" "$svg" "$(basename "$model")" <<'PY'
import json, math, sys
lines = [json.loads(line) for line in open(sys.argv[1])]
series = list(dict.fromkeys(p["series"] for p in lines))
points = [p for p in lines if "label" in p]
for p in points:  # a KLD below zero is the base's own logits, rounded
    p["kld"] = max(p["kld"], 0.0)
by = {(p["series"], p["label"]): p for p in points}
labels = list(dict.fromkeys(p["label"] for p in points))
mix, plan, gptq = series
print(f"| size of | {mix}: bpw / KLD | {plan}: bpw / KLD | {gptq}: bpw / KLD / top-1 | GPTQ plan / mix | GPTQ plan / plan |")
print("| --- | --- | --- | --- | ---: | ---: |")
for label in labels:
    a, b, c = by.get((mix, label)), by[(plan, label)], by[(gptq, label)]
    # No ratio to the base itself.
    ratio = lambda x, y: "–" if not y or y["kld"] <= 1e-9 else "0 (the base)" if x["kld"] <= 1e-9 else f"{x['kld'] / y['kld']:.2f}"
    mix_cell = f"{a['bpw']:.3f} / {a['kld']:.5f}" if a else "–"
    print(f"| {label} | {mix_cell} | {b['bpw']:.3f} / {b['kld']:.5f} | {c['bpw']:.3f} / {c['kld']:.5f} / "
          f"{100 * c['top1']:.2f}% | {ratio(c, a)} | {ratio(c, b)} |")
# The SVG: log KLD against bpw, one polyline per series. A point at the base's own logits (KLD 0 to rounding:
# a plan that keeps a quantized source's blocks as they are) has no place on a log axis and is left out.
points = [p for p in points if p["kld"] > 1e-9]
W, H, L, R, T, B = 640, 420, 70, 20, 30, 50
xs = [p["bpw"] for p in points]; ks = [math.log10(p["kld"]) for p in points]
x0, x1 = math.floor(min(xs) * 2) / 2, math.ceil(max(xs) * 2) / 2
k0, k1 = math.floor(min(ks)), math.ceil(max(ks))
X = lambda v: L + (v - x0) / (x1 - x0) * (W - L - R)
Y = lambda k: T + (k1 - k) / (k1 - k0) * (H - T - B)
colours = ["#d62728", "#1f77b4", "#2ca02c"]
out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
       f'<rect width="{W}" height="{H}" fill="white"/>',
       f'<text x="{W / 2}" y="18" text-anchor="middle">{sys.argv[3]}: KL-divergence from the base against bits per weight</text>']
for k in range(k0, k1 + 1):
    out.append(f'<line x1="{L}" x2="{W - R}" y1="{Y(k):.1f}" y2="{Y(k):.1f}" stroke="#ddd"/>')
    out.append(f'<text x="{L - 6}" y="{Y(k) + 4:.1f}" text-anchor="end">1e{k}</text>')
v = x0
while v <= x1 + 1e-9:
    out.append(f'<line x1="{X(v):.1f}" x2="{X(v):.1f}" y1="{T}" y2="{H - B}" stroke="#eee"/>')
    out.append(f'<text x="{X(v):.1f}" y="{H - B + 16}" text-anchor="middle">{v:g}</text>')
    v += 0.5
out.append(f'<text x="{(L + W - R) / 2}" y="{H - 12}" text-anchor="middle">bits per weight</text>')
for i, s in enumerate(series):
    pts = sorted((p["bpw"], math.log10(p["kld"])) for p in points if p["series"] == s)
    out.append(f'<polyline fill="none" stroke="{colours[i]}" stroke-width="2" points="' + " ".join(f"{X(a):.1f},{Y(b):.1f}" for a, b in pts) + '"/>')
    out += [f'<circle cx="{X(a):.1f}" cy="{Y(b):.1f}" r="3" fill="{colours[i]}"/>' for a, b in pts]
    out.append(f'<text x="{W - R - 200}" y="{T + 16 + 16 * i}" fill="{colours[i]}">{s}</text>')
out.append("</svg>")
open(sys.argv[2], "w").write("\n".join(out) + "\n")
PY
