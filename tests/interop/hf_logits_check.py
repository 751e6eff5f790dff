#!/usr/bin/env python3
"""transformers (CPU, float32) on a Hugging Face directory, against logits lowbit computed.

usage: hf_logits_check.py HF_DIR TOKENS.i32 LOGITS.f32 [--unscaled] [--generate] [--text TEXT]
  TOKENS.i32: the token ids (int32); LOGITS.f32: lowbit's logits, tokens × vocab (float32)
  --unscaled: also run the model with its RoPE scaling removed (rope_type default, same theta) and
              report how far lowbit is from that: a test that cannot tell the two apart proves nothing
  --generate: run generate() for 8 new tokens from the first 4 tokens (greedy)
  --text:     also encode TEXT with AutoTokenizer (no special tokens) and report the ids
Prints JSON: max_abs_diff, max_abs_logit, argmax_agreement, and the optional results.
"""
import argparse
import json

import numpy as np
import torch
import transformers
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

parser = argparse.ArgumentParser()
parser.add_argument("dir")
parser.add_argument("tokens")
parser.add_argument("logits")
parser.add_argument("--unscaled", action="store_true")
parser.add_argument("--generate", action="store_true")
parser.add_argument("--text")
args = parser.parse_args()

torch.manual_seed(0)
tokens = np.fromfile(args.tokens, dtype=np.int32)
lowbit = np.fromfile(args.logits, dtype=np.float32).reshape(len(tokens), -1)


def logits_of(model):
    with torch.no_grad():
        return model(torch.tensor(tokens, dtype=torch.long)[None]).logits[0].float().numpy()


model = AutoModelForCausalLM.from_pretrained(args.dir, dtype=torch.float32)
model.eval()
ref = logits_of(model)
result = {
    "transformers": transformers.__version__, "torch": torch.__version__, "class": type(model).__name__,
    "max_abs_diff": float(np.abs(ref - lowbit).max()), "max_abs_logit": float(np.abs(ref).max()),
    "argmax_agreement": float((ref.argmax(-1) == lowbit.argmax(-1)).mean()),
}
if args.unscaled:
    config = AutoConfig.from_pretrained(args.dir)
    theta = config.rope_parameters["rope_theta"]
    config.rope_parameters = {"rope_type": "default", "rope_theta": theta}
    plain = AutoModelForCausalLM.from_pretrained(args.dir, config=config, dtype=torch.float32)
    result["unscaled_max_abs_diff"] = float(np.abs(logits_of(plain) - lowbit).max())
if args.generate:
    prompt = torch.tensor(tokens[:4], dtype=torch.long)[None]
    out = model.generate(prompt, max_new_tokens=8, min_new_tokens=8, do_sample=False, pad_token_id=int(tokens[0]))
    result["generated"] = out[0].tolist()
if args.text is not None:
    tokenizer = AutoTokenizer.from_pretrained(args.dir)
    result["text_ids"] = tokenizer(args.text, add_special_tokens=False)["input_ids"]
print(json.dumps(result))
