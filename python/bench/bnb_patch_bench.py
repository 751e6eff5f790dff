"""transformers + bitsandbytes 4-bit on the GPU, prefill and decode tokens/s: the model in bf16, bitsandbytes'
own kernels, and the same quantized model after lowbit.integrations.bitsandbytes.patch() — all in this one run.

    PYTHONPATH=build/python python3 python/bench/bnb_patch_bench.py MODEL_DIR [--prompt 512] [--new 128]
    PYTHONPATH=build/python python3 python/bench/bnb_patch_bench.py --shape smollm2-135m
    PYTHONPATH=build/python python3 python/bench/bnb_patch_bench.py --shape llama3-8b --layers 8

MODEL_DIR: a Hugging Face directory (e.g. ../shared/data/lowbit-bpe-50M). --shape builds a Llama model of that
shape with random bf16 weights instead (speed does not depend on the values) and saves it to a temporary
directory first, so that bitsandbytes quantizes it on loading exactly as it would a checkpoint. Prints one JSON
line per setting; the patched model's logits are compared with bitsandbytes' on the same prompt.
"""
import argparse
import json
import tempfile
import time

import torch
import transformers

from lowbit.integrations import bitsandbytes as integration

# Published configurations (the parts that set the speed): SmolLM2-135M, and Llama-3-8B.
SHAPES = {
    "smollm2-135m": dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                         num_key_value_heads=3, vocab_size=49152, rope_theta=100000.0, tie_word_embeddings=True),
    "llama3-8b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                      num_key_value_heads=8, vocab_size=128256, rope_theta=500000.0, tie_word_embeddings=False),
}


def timed(fn, repeats):
    fn()  # warm-up (allocations, cuBLAS heuristics, lazy re-layouts)
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - start) / repeats


def gpu_ms_per_decode_step(model, ids, steps=16):
    """The GPU's busy time per decoding step (sum of the kernels' durations, from torch's profiler): what the
    kernels cost, apart from the Python and launch overhead that bounds eager decoding of small models."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    with torch.no_grad():
        out = model(ids, use_cache=True)
        cache, token = out.past_key_values, out.logits[:, -1:].argmax(-1)
        out = model(token, past_key_values=cache, use_cache=True)  # warm-up of the one-token path
        cache, token = out.past_key_values, out.logits[:, -1:].argmax(-1)
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            for _ in range(steps):
                out = model(token, past_key_values=cache, use_cache=True)
                cache, token = out.past_key_values, out.logits[:, -1:].argmax(-1)
            torch.cuda.synchronize()
    kernel_us = sum(e.device_time_total for e in prof.events() if e.device_type == DeviceType.CUDA)
    return kernel_us / steps / 1e3


def host_us_per_layer_call(model, calls=2000):
    """Wall time of one 4-bit layer's forward on one token, its GPU work negligible: what the host spends per
    layer call (bitsandbytes' or the patched forward), the bound on eager decoding of small models."""
    import bitsandbytes

    layer = next((m for m in model.modules() if isinstance(m, bitsandbytes.nn.Linear4bit)), None)
    if layer is None:
        return None
    x = torch.randn(1, 1, layer.in_features, device="cuda", dtype=torch.bfloat16)
    with torch.no_grad():
        layer(x)
        torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(calls):
            layer(x)
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / calls * 1e6


def measure(model, ids, new_tokens, repeats):
    with torch.no_grad():
        prefill = timed(lambda: model(ids), repeats)
        generate = timed(lambda: model.generate(ids, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                                                do_sample=False), repeats)
    decode = max(generate - prefill, 1e-9)
    row = {"prefill_tok_s": ids.shape[1] / prefill, "decode_tok_s": new_tokens / decode,
           "peak_gib": torch.cuda.max_memory_allocated() / 2**30}
    row["layer_call_us"] = host_us_per_layer_call(model)
    try:
        row["decode_gpu_ms_per_step"] = gpu_ms_per_decode_step(model, ids)
    except Exception as e:  # the profiler is optional to the tokens/s figures
        row["decode_gpu_ms_per_step"] = f"not measured: {e}"
    return row


def random_model_dir(shape, layers):
    config = transformers.LlamaConfig(**SHAPES[shape], max_position_embeddings=8192, rms_norm_eps=1e-5)
    if layers:
        config.num_hidden_layers = layers
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = transformers.LlamaForCausalLM(config).to(torch.bfloat16)
    path = tempfile.mkdtemp(prefix=f"lowbit-{shape}-")
    model.save_pretrained(path)
    del model
    torch.cuda.empty_cache()
    return path


def _ratio(a, b):
    return a / b if isinstance(a, float) and isinstance(b, float) and b > 0 else None


def main():
    p = argparse.ArgumentParser()
    p.add_argument("model", nargs="?")
    p.add_argument("--shape", choices=sorted(SHAPES))
    p.add_argument("--layers", type=int, default=0, help="with --shape: this many blocks instead of the model's")
    p.add_argument("--prompt", type=int, default=512)
    p.add_argument("--new", type=int, default=128)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--quant-type", default="nf4", choices=["nf4", "fp4"])
    p.add_argument("--double-quant", action="store_true", help="bnb_4bit_use_double_quant (QLoRA's default)")
    a = p.parse_args()
    if bool(a.model) == bool(a.shape):
        p.error("give a model directory or --shape")
    path = a.model or random_model_dir(a.shape, a.layers)
    name = a.model or f"{a.shape} (random weights, {a.layers or SHAPES[a.shape]['num_hidden_layers']} blocks)"
    device = torch.cuda.get_device_name()
    torch.manual_seed(1)
    vocab = transformers.AutoConfig.from_pretrained(path).vocab_size
    ids = torch.randint(10, vocab - 10, (1, a.prompt), device="cuda")

    def report(setting, row):
        row = {"model": name, "device": device, "setting": setting, "prompt": a.prompt, "new": a.new, **row}
        print(json.dumps(row), flush=True)
        return row

    torch.cuda.reset_peak_memory_stats()
    model = transformers.AutoModelForCausalLM.from_pretrained(path, device_map="cuda", dtype=torch.bfloat16).eval()
    report("transformers bf16", measure(model, ids, a.new, a.repeats))
    del model
    torch.cuda.empty_cache()

    config = transformers.BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=a.quant_type,
                                             bnb_4bit_use_double_quant=a.double_quant,
                                             bnb_4bit_compute_dtype=torch.bfloat16)
    torch.cuda.reset_peak_memory_stats()
    model = transformers.AutoModelForCausalLM.from_pretrained(path, quantization_config=config, device_map="cuda",
                                                              dtype=torch.bfloat16).eval()
    rows = {}
    logits = {}
    for setting in ("bitsandbytes", "lowbit"):
        if setting == "lowbit":
            integration.patch()
        with torch.no_grad():
            logits[setting] = model(ids[:, :64]).logits.float()
        rows[setting] = report(f"{setting} {a.quant_type}{'+dq' if a.double_quant else ''}",
                               measure(model, ids, a.new, a.repeats))
    integration.unpatch()
    ref, got = logits["bitsandbytes"], logits["lowbit"]
    agreement = (ref.argmax(-1) == got.argmax(-1)).float().mean().item()
    print(json.dumps({"model": name, "lowbit_over_bitsandbytes": {
        "decode": rows["lowbit"]["decode_tok_s"] / rows["bitsandbytes"]["decode_tok_s"],
        "decode_gpu_time": _ratio(rows["bitsandbytes"].get("decode_gpu_ms_per_step"), rows["lowbit"].get("decode_gpu_ms_per_step")),
        "prefill": rows["lowbit"]["prefill_tok_s"] / rows["bitsandbytes"]["prefill_tok_s"]},
        "logits_max_abs_diff": (ref - got).abs().max().item(), "logits_scale": ref.abs().max().item(),
        "top1_agreement": agreement}), flush=True)


if __name__ == "__main__":
    main()
