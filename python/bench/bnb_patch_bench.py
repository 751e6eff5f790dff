"""transformers + bitsandbytes nf4 on the GPU, prefill and decode tokens/s, bitsandbytes' own kernels against
the same model after lowbit.integrations.bitsandbytes.patch() — both measured in this one run.

    PYTHONPATH=build/python build/venv/bin/python python/bench/bnb_patch_bench.py MODEL_DIR [--prompt 512] [--new 128]

MODEL_DIR: a Hugging Face directory (e.g. ../shared/data/lowbit-bpe-50M). Prints one JSON line per setting.
"""
import argparse
import json
import time

import torch
import transformers

from lowbit.integrations import bitsandbytes as integration


def timed(fn, repeats):
    fn()  # warm-up (allocations, cuBLAS heuristics, lazy re-layouts)
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - start) / repeats


def measure(model, prompt_tokens, new_tokens, repeats):
    ids = torch.randint(10, model.config.vocab_size - 10, (1, prompt_tokens), device="cuda")
    with torch.no_grad():
        prefill = timed(lambda: model(ids), repeats)
        generate = timed(lambda: model.generate(ids, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False), repeats)
    decode = max(generate - prefill, 1e-9)
    return {"prefill_tok_s": prompt_tokens / prefill, "decode_tok_s": new_tokens / decode}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("model")
    p.add_argument("--prompt", type=int, default=512)
    p.add_argument("--new", type=int, default=128)
    p.add_argument("--repeats", type=int, default=3)
    a = p.parse_args()
    config = transformers.BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16)
    model = transformers.AutoModelForCausalLM.from_pretrained(a.model, quantization_config=config, device_map="cuda", dtype=torch.bfloat16).eval()
    device = torch.cuda.get_device_name()
    for setting in ("bitsandbytes", "lowbit"):
        if setting == "lowbit":
            integration.patch()
        row = {"model": a.model, "device": device, "setting": setting, "prompt": a.prompt, "new": a.new}
        row.update(measure(model, a.prompt, a.new, a.repeats))
        print(json.dumps(row), flush=True)
    integration.unpatch()


if __name__ == "__main__":
    main()
