"""lowbit merge against PEFT's own merge_and_unload(), on the CPU.

A small random Llama saved by transformers (bf16) gets adapters made by PEFT (random B, so the update is
not zero): ranks 1 to 64, rsLoRA, target modules by list and by regex, rank/alpha patterns, a saved
lm_head. `lowbit merge` writes the merged model as a Hugging Face directory; every weight must equal
PEFT's merged weight within one bf16 rounding. Adapters that cannot be merged must fail with a message
and leave no output.

usage: peft_merge_check.py LOWBIT WORKDIR   (prints one JSON line per case; exit 1 on any failure)
"""
import json
import os
import subprocess
import sys

import torch
from peft import LoraConfig, get_peft_model
from safetensors.torch import load_file, save_file
from tokenizers import ByteLevelBPETokenizer
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

lowbit, work = sys.argv[1], sys.argv[2]
os.makedirs(work, exist_ok=True)
torch.manual_seed(0)
config = LlamaConfig(hidden_size=256, intermediate_size=512, num_hidden_layers=2, num_attention_heads=8,
                     num_key_value_heads=4, vocab_size=512, max_position_embeddings=256)
base_dir = os.path.join(work, "base")
LlamaForCausalLM(config).to(torch.bfloat16).save_pretrained(base_dir, safe_serialization=True)
# A byte-level BPE vocabulary of the model's size, as every Hugging Face checkpoint carries one.
bpe = ByteLevelBPETokenizer()
bpe.train_from_iterator(["the quick brown fox jumps over the lazy dog " * 50, "low-bit weights merge adapters " * 50],
                        vocab_size=config.vocab_size, special_tokens=["<|endoftext|>"])
PreTrainedTokenizerFast(tokenizer_object=bpe._tokenizer, eos_token="<|endoftext|>").save_pretrained(base_dir)

CASES = {
    "r1-list": dict(r=1, lora_alpha=2, target_modules=["q_proj", "v_proj"]),
    "r8-saved-head": dict(r=8, lora_alpha=16, target_modules=["o_proj", "k_proj"], modules_to_save=["lm_head"]),
    "r16-patterns": dict(r=16, lora_alpha=32, target_modules=["q_proj", "down_proj"],
                         rank_pattern={"down_proj": 4}, alpha_pattern={"q_proj": 8}),
    "r64-rslora-regex": dict(r=64, lora_alpha=16, use_rslora=True, target_modules=r".*\.mlp\.(gate|up|down)_proj"),
}


def bf16_ulps(got, want):
    """Largest distance between two bf16 tensors in units in the last place of `want`."""
    want32 = want.float()
    exponent = torch.floor(torch.log2(want32.abs().clamp_min(2.0 ** -126)))
    ulp = torch.pow(2.0, exponent - 7)
    return ((got.float() - want32).abs() / ulp).max().item()


failures = 0
for name, kwargs in CASES.items():
    model = LlamaForCausalLM.from_pretrained(base_dir, torch_dtype=torch.bfloat16)
    base_state = {k: v.clone() for k, v in model.state_dict().items()}
    peft_model = get_peft_model(model, LoraConfig(init_lora_weights=False, **kwargs))
    if "modules_to_save" in kwargs:
        with torch.no_grad():  # a trained head: not the base's
            peft_model.base_model.model.lm_head.modules_to_save["default"].weight.add_(0.01)
    adapter_dir = os.path.join(work, name)
    peft_model.save_pretrained(adapter_dir)
    expected = peft_model.merge_and_unload().state_dict()

    out = os.path.join(work, name + "-merged")
    run = subprocess.run([lowbit, "merge", base_dir, "--lora", adapter_dir, "-o", out, "--quiet"], capture_output=True, text=True)
    if run.returncode != 0:
        print(json.dumps({"case": name, "ok": False, "error": run.stderr.strip()}))
        failures += 1
        continue
    merged = {}
    for f in sorted(os.listdir(out)):
        if f.endswith(".safetensors"):
            merged.update(load_file(os.path.join(out, f)))
    worst = 0.0
    changed = sum(int(not torch.equal(v, base_state[k])) for k, v in expected.items() if k in base_state)
    for key, want in expected.items():
        if key not in merged:
            if key == "lm_head.weight" and config.tie_word_embeddings:
                continue
            print(json.dumps({"case": name, "ok": False, "missing": key}))
            failures += 1
            continue
        worst = max(worst, bf16_ulps(merged[key], want))
    ok = worst <= 1.0 and changed > 0  # the adapters changed the model, and lowbit changed it alike
    failures += int(not ok)
    print(json.dumps({"case": name, "ok": ok, "max_bf16_ulps": worst, "tensors": len(expected), "changed_by_merge": changed}))

# Refusals: a shape that does not fit the base, and a module the base lacks; nothing written.
bad = os.path.join(work, "r1-list")
weights = load_file(os.path.join(bad, "adapter_model.safetensors"))
for case, edit in {
    "shape-mismatch": lambda w: {k: (v[:, :-1].contiguous() if k.endswith("lora_A.weight") else v) for k, v in w.items()},
    "absent-module": lambda w: {k.replace("layers.1.", "layers.9."): v for k, v in w.items()},
}.items():
    adapter_dir = os.path.join(work, case)
    os.makedirs(adapter_dir, exist_ok=True)
    with open(os.path.join(bad, "adapter_config.json")) as src, open(os.path.join(adapter_dir, "adapter_config.json"), "w") as dst:
        dst.write(src.read())
    save_file(edit(weights), os.path.join(adapter_dir, "adapter_model.safetensors"))
    out = os.path.join(work, case + "-merged")
    run = subprocess.run([lowbit, "merge", base_dir, "--lora", adapter_dir, "-o", out, "--quiet"], capture_output=True, text=True)
    leftovers = [f for f in os.listdir(work) if f.startswith(case + "-merged") or ".lowbit-merge.tmp" in f]
    ok = run.returncode != 0 and "adapter_model.safetensors" in run.stderr and not leftovers
    failures += int(not ok)
    print(json.dumps({"case": case, "ok": ok, "error": run.stderr.strip(), "leftovers": leftovers}))

sys.exit(1 if failures else 0)
