#!/usr/bin/env python3
"""bitsandbytes on the CPU reads a checkpoint `lowbit quantize --format nf4|fp4` wrote: its own
dequantize_4bit of every stored weight (with the quant state rebuilt by QuantState.from_dict, as
transformers does) against lowbit's dequantization of the same checkpoint; then transformers loads
the checkpoint on the CPU and runs a forward pass.

usage: bnb_cpu_check.py CHECKPOINT_DIR LOWBIT_DEQUANTIZED.safetensors
Prints JSON: bitsandbytes version, weights compared, max |difference|, the class transformers loaded
q_proj as, and whether its logits are finite.
"""
import json
import sys
from pathlib import Path

import bitsandbytes as bnb
import bitsandbytes.functional as F
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

checkpoint, plain_path = Path(sys.argv[1]), sys.argv[2]
stored = {}
for f in sorted(checkpoint.glob("*.safetensors")):
    stored.update(load_file(str(f)))
plain = load_file(plain_path)

weights, max_diff = 0, 0.0
for name in sorted(stored):
    state_keys = [k for k in stored if k.startswith(name + ".quant_state.bitsandbytes__")]
    if not state_keys:
        continue
    parts = {k[len(name) + 1:]: v for k, v in stored.items() if k.startswith(name + ".")}
    state = F.QuantState.from_dict(parts, device=torch.device("cpu"))
    values = F.dequantize_4bit(stored[name], state).float()
    max_diff = max(max_diff, float((values - plain[name].float()).abs().max()))
    weights += 1

model = AutoModelForCausalLM.from_pretrained(checkpoint, device_map="cpu")
layer = model.model.layers[0].self_attn.q_proj
with torch.no_grad():
    logits = model(torch.arange(16)[None] % model.config.vocab_size).logits
print(json.dumps({"bitsandbytes": bnb.__version__, "weights": weights, "max_abs_diff": max_diff,
                  "loaded_as": type(layer).__name__, "forward_finite": bool(torch.isfinite(logits).all())}))
