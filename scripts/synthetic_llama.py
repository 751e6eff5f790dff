#!/usr/bin/env python3
"""A synthetic Llama-3-8B-shaped GGUF for speed measurements (issue 14): hidden 4096, 32 layers, 32 query
heads over 8 key/value heads, feed-forward 14336, RoPE base 500000, bf16 matrices with heavy-tailed random
values (a Gaussian scaled by a log-normal factor per value, ~1/sqrt(fan-in) overall), f32 norms, and the
source's vocabulary and tokenizer metadata, so that `lowbit eval` runs on text: lowbit-bytes-12M's 259 bytes,
or SmolLM2's 49,152-token BPE from its metadata (nearer Llama-3's 128,256 in the output layer's share of the
work, and a tokenizer llama.cpp runs fast; its byte vocabulary takes llama.cpp minutes on WikiText-2).

    python3 scripts/synthetic_llama.py BYTES_12M.gguf OUT.gguf [--layers N] [--hf-reference OUT.json]
    python3 scripts/synthetic_llama.py --shape source SMOLLM2_METADATA.gguf OUT.gguf
    python3 scripts/synthetic_llama.py --time-checkpoint DIR OUT.json

Random numbers come from torch (on the GPU when there is one: 7B values in seconds). With --hf-reference
the same weights are also built as a transformers LlamaForCausalLM in bf16 and timed the way `lowbit
bench --model` and `lowbit eval` time lowbit (prefill of 512 tokens, greedy decoding of 128 at batch 1,
forward passes over windows of 512), so both run on identical weights in the same device call.
--shape source keeps the source's own shape, metadata and tokenizer and ties the output layer to the
embeddings: a GGUF of SmolLM2-135M's metadata alone (1.8 MB, which can travel where its weights cannot)
becomes SmolLM2's shape and vocabulary with random weights, so eval tokenizes real text as SmolLM2 does.
--time-checkpoint times a Hugging Face directory the same way as transformers loads it: a bitsandbytes
checkpoint that lowbit wrote from this model (`lowbit dequantize` to a directory, then `lowbit quantize
--format nf4 --double-quant`) is transformers + bitsandbytes on the weights lowbit runs.
"""
import argparse
import json
import struct
import sys
import time

import numpy as np
import torch

GGUF_TYPES = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
STRING, ARRAY = 8, 9
GGML_F32, GGML_BF16 = 0, 30


def read_metadata(path):
    """The key/value pairs of a GGUF v3 file as (key, type, raw value bytes), in file order."""
    data = open(path, "rb").read()
    if data[:4] != b"GGUF":
        sys.exit(f"{path}: not a GGUF file")
    _, _, n_kv = struct.unpack_from("<IQQ", data, 4)
    pos = 24

    def skip_value(t, p):
        if t == STRING:
            (n,) = struct.unpack_from("<Q", data, p)
            return p + 8 + n
        if t == ARRAY:
            et, n = struct.unpack_from("<IQ", data, p)
            p += 12
            if et in GGUF_TYPES:
                return p + n * struct.calcsize(GGUF_TYPES[et])
            for _ in range(n):
                p = skip_value(et, p)
            return p
        return p + struct.calcsize(GGUF_TYPES[t])

    out = []
    for _ in range(n_kv):
        (n,) = struct.unpack_from("<Q", data, pos)
        key = data[pos + 8:pos + 8 + n].decode()
        pos += 8 + n
        (t,) = struct.unpack_from("<I", data, pos)
        end = skip_value(t, pos + 4)
        out.append((key, t, data[pos + 4:end]))
        pos = end
    return out


def gguf_string(s):
    b = s.encode()
    return struct.pack("<Q", len(b)) + b


def write_gguf(path, metadata, tensors):
    """tensors: (name, ggml type, shape outermost first, numpy array of the bytes)."""
    header = bytearray(b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(metadata)))
    for key, t, raw in metadata:
        header += gguf_string(key) + struct.pack("<I", t) + raw
    offset = 0
    for name, gtype, shape, array in tensors:
        header += gguf_string(name) + struct.pack("<I", len(shape))
        header += b"".join(struct.pack("<Q", d) for d in reversed(shape))  # GGUF lists ne innermost first
        header += struct.pack("<IQ", gtype, offset)
        offset += (array.nbytes + 31) // 32 * 32
    header += b"\0" * (-len(header) % 32)
    with open(path + ".tmp", "wb") as f:
        f.write(header)
        for _, _, _, array in tensors:
            f.write(array.tobytes())
            f.write(b"\0" * (-array.nbytes % 32))
    import os
    os.replace(path + ".tmp", path)


def heavy_tailed(rows, cols, generator, device):
    """Gaussian values scaled by exp(0.5 N(0,1)): tails far heavier than a Gaussian's, std ~1/sqrt(cols)."""
    x = torch.randn(rows, cols, generator=generator, device=device)
    x *= torch.exp(0.5 * torch.randn(rows, cols, generator=generator, device=device))
    x *= 1.0 / (np.sqrt(cols) * 1.28)
    return x.to(torch.bfloat16)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("source", nargs="?", help="a GGUF whose tokenizer metadata is reused (lowbit-bytes-12M-bf16.gguf, SmolLM2's metadata)")
    ap.add_argument("out", nargs="?")
    ap.add_argument("--layers", type=int, help="blocks (default: 32, or the source's with --shape source)")
    ap.add_argument("--shape", choices=["llama3-8b", "source"], default="llama3-8b")
    ap.add_argument("--hf-reference", help="also time transformers bf16 on the same weights; results to this JSON file")
    ap.add_argument("--time-checkpoint", nargs=2, metavar=("DIR", "OUT_JSON"), help="only time this Hugging Face directory in transformers")
    args = ap.parse_args()
    if args.time_checkpoint:
        time_checkpoint(*args.time_checkpoint)
        return
    if not args.source or not args.out:
        ap.error("SOURCE and OUT are required")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    g = torch.Generator(device=device).manual_seed(8)
    source = read_metadata(args.source)
    u32 = lambda v: (4, struct.pack("<I", v))
    f32 = lambda v: (6, struct.pack("<f", v))
    value = {k: raw for k, t, raw in source}
    V = struct.unpack_from("<IQ", value["tokenizer.ggml.tokens"])[1]  # the source tokenizer's vocabulary
    if args.shape == "source":
        get = lambda k: struct.unpack("<I", value[k])[0]
        E, F, H, KV = get("llama.embedding_length"), get("llama.feed_forward_length"), get("llama.attention.head_count"), get("llama.attention.head_count_kv")
        D = E // H
        args.layers = args.layers or get("llama.block_count")
        llama = {"llama.block_count": u32(args.layers), "general.file_type": u32(32)}
    else:
        E, F, H, KV, D = 4096, 14336, 32, 8, 128
        args.layers = args.layers or 32
        llama = {"llama.context_length": u32(8192), "llama.embedding_length": u32(E), "llama.block_count": u32(args.layers),
                 "llama.feed_forward_length": u32(F), "llama.attention.head_count": u32(H), "llama.attention.head_count_kv": u32(KV),
                 "llama.rope.dimension_count": u32(D), "llama.rope.freq_base": f32(500000.0),
                 "llama.attention.layer_norm_rms_epsilon": f32(1e-5), "general.file_type": u32(32)}
    # The 8B shape replaces every llama.* key of its source; a source shape keeps its own.
    replaced = set(llama) | {"general.alignment"}
    if args.shape != "source":
        replaced |= {k for k, _, _ in source if k.startswith("llama.")}
    metadata = [(k, t, raw) for k, t, raw in source if k not in replaced] + [(k, t, raw) for k, (t, raw) in llama.items()]
    torch_weights = {}

    def matrix(name, rows, cols, hf_name=None):
        w = heavy_tailed(rows, cols, g, device)
        if hf_name:
            torch_weights[hf_name] = w
        return (name, GGML_BF16, (rows, cols), w.view(torch.int16).cpu().numpy())

    def norm(name, n, hf_name=None):
        w = (1.0 + 0.1 * torch.randn(n, generator=g, device=device)).float()
        if hf_name:
            torch_weights[hf_name] = w.to(torch.bfloat16)
        return (name, GGML_F32, (n,), w.cpu().numpy())

    hf = args.hf_reference is not None
    tensors = [matrix("token_embd.weight", V, E, "model.embed_tokens.weight" if hf else None),
               norm("output_norm.weight", E, "model.norm.weight" if hf else None)]
    if args.shape != "source":  # SmolLM2 ties its output layer to the embeddings
        tensors.append(matrix("output.weight", V, E, "lm_head.weight" if hf else None))
    for l in range(args.layers):
        p, q = f"blk.{l}.", f"model.layers.{l}."
        n = lambda s: q + s if hf else None
        # llama.cpp's Q/K rows are permuted from HF's; the weights are random, so the HF model simply gets
        # the same rows under its own layout (the timing, not the values, is compared).
        tensors += [norm(p + "attn_norm.weight", E, n("input_layernorm.weight")), norm(p + "ffn_norm.weight", E, n("post_attention_layernorm.weight")),
                    matrix(p + "attn_q.weight", H * D, E, n("self_attn.q_proj.weight")), matrix(p + "attn_k.weight", KV * D, E, n("self_attn.k_proj.weight")),
                    matrix(p + "attn_v.weight", KV * D, E, n("self_attn.v_proj.weight")), matrix(p + "attn_output.weight", E, H * D, n("self_attn.o_proj.weight")),
                    matrix(p + "ffn_gate.weight", F, E, n("mlp.gate_proj.weight")), matrix(p + "ffn_up.weight", F, E, n("mlp.up_proj.weight")),
                    matrix(p + "ffn_down.weight", E, F, n("mlp.down_proj.weight"))]
    start = time.time()
    write_gguf(args.out, metadata, tensors)
    print(f"wrote {args.out}: {len(tensors)} tensors in {time.time() - start:.1f} s", flush=True)
    del tensors
    if hf:
        time_transformers(torch_weights, args.layers, E, F, H, KV, V, args.hf_reference)


def time_transformers(weights, layers, E, F, H, KV, V, out_path):
    from transformers import LlamaConfig, LlamaForCausalLM
    config = LlamaConfig(hidden_size=E, intermediate_size=F, num_hidden_layers=layers, num_attention_heads=H, num_key_value_heads=KV,
                         vocab_size=V, max_position_embeddings=8192, rope_theta=500000.0, rms_norm_eps=1e-5, tie_word_embeddings=False)
    # Built on the GPU (its rotary buffers included), then given the generated weights.
    with torch.device("cuda"):
        model = LlamaForCausalLM(config).to(torch.bfloat16)
    model.load_state_dict(weights, strict=True)
    model.eval()
    print(json.dumps(time_model(model, V)), file=open(out_path, "w"))
    print("transformers bf16:", open(out_path).read(), flush=True)


def time_checkpoint(directory, out_path):
    from transformers import AutoModelForCausalLM
    model = AutoModelForCausalLM.from_pretrained(directory, device_map="cuda", dtype=torch.bfloat16)
    model.eval()
    result = time_model(model, model.config.vocab_size)
    result["quantization"] = str(getattr(model.config, "quantization_config", None))
    print(json.dumps(result), file=open(out_path, "w"))
    print(f"transformers, {directory}:", open(out_path).read(), flush=True)


def time_model(model, vocab, prompt=512, generate=128, windows=8):
    """Prefill, greedy decoding at batch 1 (transformers' generate with its KV cache) and eval-style
    forward passes over windows of 512, each after a warm-up, synchronised before reading the clock."""
    torch.manual_seed(0)
    ids = torch.randint(0, vocab, (1, prompt), device="cuda")
    batch = torch.randint(0, vocab, (windows, prompt), device="cuda")

    def timed(f):
        f()
        torch.cuda.synchronize()
        start = time.time()
        f()
        torch.cuda.synchronize()
        return time.time() - start

    torch.cuda.reset_peak_memory_stats()
    with torch.no_grad():
        prefill = timed(lambda: model(ids))
        gen = timed(lambda: model.generate(ids, max_new_tokens=generate, min_new_tokens=generate, do_sample=False))
        evals = timed(lambda: model(batch))
    return {"prefill_tokens_per_s": prompt / prefill, "decode_tokens_per_s": generate / max(gen - prefill, 1e-9),
            "eval_tokens_per_s": windows * prompt / evals, "peak_gpu_memory_bytes": torch.cuda.max_memory_allocated()}


if __name__ == "__main__":
    main()
