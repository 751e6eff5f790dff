#!/usr/bin/env python3
"""Interop proof, run on the GPU machine (scripts/device-check.sh): transformers + bitsandbytes load
the checkpoints `lowbit quantize --format nf4|fp4|int8` writes, and lowbit's bytes equal the ones
bitsandbytes' CUDA kernels produce from the same weights.

usage: bnb_transformers_check.py LOWBIT_BINARY WORK_DIR
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
weights = load_file(str(base_dir / "model.safetensors"))

def run(*args):
    subprocess.run([lowbit, *args, "--quiet"], check=True)

def merged_state(directory):
    state = {}
    for f in sorted(Path(directory).glob("*.safetensors")):
        state.update(load_file(str(f)))
    return state

results = []
for fmt, extra in [("nf4", ["--double-quant"]), ("fp4", []), ("nf4", []), ("int8", [])]:
    label = fmt + (" +dq" if extra else "")
    out = work / f"q_{fmt}_{len(extra)}"
    run("quantize", str(base_dir), "-o", str(out), "--format", fmt, *extra)
    model = AutoModelForCausalLM.from_pretrained(out, device_map="cuda")
    layer = model.model.layers[0].self_attn.q_proj
    expected_class = bnb.nn.Linear8bitLt if fmt == "int8" else bnb.nn.Linear4bit
    loaded_as = type(layer).__name__
    assert isinstance(layer, expected_class), loaded_as
    stored = merged_state(out)
    same_bytes = total = 0
    for name, w in weights.items():
        if not name.endswith("proj.weight"):
            continue
        total += 1
        if fmt == "int8":
            cb, scb, _ = F.int8_vectorwise_quant(w.cuda().half())
            module = name[: -len(".weight")]
            same_bytes += int(torch.equal(cb.cpu(), stored[name]) and torch.equal(scb.cpu(), stored[module + ".SCB"]))
        else:
            packed, state = F.quantize_4bit(w.cuda(), blocksize=64, compress_statistics=bool(extra), quant_type=fmt)
            ok = torch.equal(packed.cpu(), stored[name])
            if extra:  # double quant: codes of the absmax against lowbit's (offsets are each side's mean)
                ok = ok and torch.equal(state.absmax.cpu(), stored[name + ".absmax"])
            else:
                ok = ok and torch.equal(state.absmax.cpu(), stored[name + ".absmax"])
            same_bytes += int(ok)
    # lowbit's own dequantization against bitsandbytes' of the loaded layer.
    back = work / f"back_{fmt}_{len(extra)}"
    run("dequantize", str(out), "-o", str(back))
    lowbit_w = merged_state(back)["model.layers.0.self_attn.q_proj.weight"].cuda()
    if fmt == "int8":
        bnb_w = (layer.weight.data.float() * layer.weight.SCB.float()[:, None] / 127).to(lowbit_w.dtype)
        dequant_equal = torch.allclose(bnb_w.float(), lowbit_w.float(), rtol=1e-2, atol=1e-3)
    else:
        bnb_w = F.dequantize_4bit(layer.weight.data, layer.weight.quant_state)
        dequant_equal = bool(torch.equal(bnb_w, lowbit_w)) and bnb_w.dtype == lowbit_w.dtype
    with torch.no_grad():
        logits = model(tokens).logits.float()
    rel = ((logits - ref_logits).norm() / ref_logits.norm()).item()
    results.append((label, loaded_as, f"{same_bytes}/{total}", dequant_equal, rel))
    del model
    torch.cuda.empty_cache()

print(f"{'format':<8} {'transformers loads as':<22} {'same bytes as bnb CUDA':>22} {'dequant == bnb':>15} {'rel. logit err':>15}")
for label, cls, same, deq, rel in results:
    print(f"{label:<8} {cls:<22} {same:>22} {str(deq):>15} {rel:>15.4f}")
json.dump(results, open(work / "interop.json", "w"))
