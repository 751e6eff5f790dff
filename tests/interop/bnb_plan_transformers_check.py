#!/usr/bin/env python3
"""Interop proof for planned bitsandbytes checkpoints, run on the GPU machine: `lowbit plan --target bnb`
mixes NF4 and FP4, blocksizes and double quantization per weight and keeps some weights in 16 bits;
transformers + bitsandbytes must load the checkpoint `lowbit quantize --plan` writes with every weight
in its planned format, dequantize each one to exactly lowbit's values, and run the model.

usage: bnb_plan_transformers_check.py LOWBIT_BINARY WORK_DIR
"""
import json
import subprocess
import sys
from pathlib import Path

import torch
import bitsandbytes as bnb
import bitsandbytes.functional as F
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from random_llama import save_random_llama

lowbit, work = sys.argv[1], Path(sys.argv[2])
work.mkdir(parents=True, exist_ok=True)
base_dir = work / "base"
base, tokens, ref_logits = save_random_llama(base_dir)

# Rules that force variety on top of what the allocation picks: one weight kept in 16 bits, FP4 keys,
# down projections at 4.4 bits or more.
rules = work / "rules.json"
rules.write_text(json.dumps({"rules": [
    {"match": "model.layers.0.self_attn.q_proj.weight", "allow": ["bf16"]},
    {"match": "*.self_attn.k_proj.weight", "allow": ["fp4"]},
    {"match": "*.mlp.down_proj.weight", "min_bpw": 4.4},
]}))
plan_path, out, back = work / "plan.json", work / "planned", work / "back"
for args in (["plan", base_dir, "--target", "bnb", "--bpw", "6.4", "--rules", rules, "-o", plan_path],
             ["quantize", base_dir, "--plan", plan_path, "-o", out], ["dequantize", out, "-o", back]):
    subprocess.run([lowbit, *map(str, args), "--quiet"], check=True)
plan = json.loads(plan_path.read_text())

model = AutoModelForCausalLM.from_pretrained(out, device_map="cuda")
lowbit_values = load_file(str(back / "model.safetensors"))
formats, checked, failures = set(), 0, []
for t in plan["tensors"]:
    if not t["quantized"]:
        continue
    module = model.get_submodule(t["name"][: -len(".weight")])
    if t["format"] in ("nf4", "fp4"):
        qs = module.weight.quant_state
        got = (type(module).__name__, qs.quant_type, qs.blocksize, qs.nested)
        want = ("Linear4bit", t["format"], t["blocksize"], t["double_quant"])
        same = torch.equal(F.dequantize_4bit(module.weight.data, qs).cpu(), lowbit_values[t["name"]])
        formats.add(f'{t["format"]}-b{t["blocksize"]}{"-dq" if t["double_quant"] else ""}')
    else:
        got, want = (type(module).__name__,), ("Linear",)
        same = torch.equal(module.weight.data.cpu(), base.get_submodule(t["name"][: -len(".weight")]).weight.data.cpu())
        formats.add(t["format"])
    checked += 1
    if got != want or not same:
        failures.append((t["name"], got, want, same))

with torch.no_grad():
    logits = model(tokens).logits.float()
rel = ((logits - ref_logits).norm() / ref_logits.norm()).item()
print(f"planned {plan['achieved_bpw']:.3f} bits per weight; formats: {', '.join(sorted(formats))}")
print(f"{checked} weights loaded by transformers in their planned format, equal to lowbit's dequantization: {checked - len(failures)}")
print(f"relative logit error against the bf16 model: {rel:.4f}")
for f in failures:
    print("MISMATCH", f)
sys.exit(1 if failures or len(formats) < 3 else 0)
