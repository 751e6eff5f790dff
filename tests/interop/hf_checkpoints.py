#!/usr/bin/env python3
"""Small random Hugging Face checkpoints built from the published config.json of real models: the
depth and width shrunk (2 layers, hidden 64, 4 heads, 2 KV heads, vocabulary of the tokenizer given),
every other field kept as published (RoPE, norms, biases, tying, special ids, sliding-window fields).
Deterministic: the same name gives the same bytes. Used by the HF -> GGUF parity test (against
llama.cpp's convert_hf_to_gguf.py, tests/data/hf_config/*.json) and by the eval agreement test.

usage: hf_checkpoints.py NAME OUT_DIR SMOLLM2.gguf      (NAME from CONFIGS; "list" prints the names)
The tokenizer is SmolLM2's (whose pre-tokenizer llama.cpp's converter recognises), written here from
the default model's GGUF with gguf-py, independently of lowbit's own exporter.
"""
import copy
import json
import sys
from pathlib import Path

import gguf
import numpy as np
from safetensors.numpy import save_file

# config.json and generation_config.json as published on the Hugging Face hub (values copied by hand).
LLAMA_31_8B = {
    "architectures": ["LlamaForCausalLM"], "attention_bias": False, "attention_dropout": 0.0, "bos_token_id": 128000,
    "eos_token_id": 128001, "hidden_act": "silu", "hidden_size": 4096, "initializer_range": 0.02, "intermediate_size": 14336,
    "max_position_embeddings": 131072, "mlp_bias": False, "model_type": "llama", "num_attention_heads": 32,
    "num_hidden_layers": 32, "num_key_value_heads": 8, "pretraining_tp": 1, "rms_norm_eps": 1e-05,
    "rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192,
                     "rope_type": "llama3"},
    "rope_theta": 500000.0, "tie_word_embeddings": False, "torch_dtype": "bfloat16", "transformers_version": "4.43.0.dev0",
    "use_cache": True, "vocab_size": 128256,
}
LLAMA_32_1B = {
    "architectures": ["LlamaForCausalLM"], "attention_bias": False, "attention_dropout": 0.0, "bos_token_id": 128000,
    "eos_token_id": 128001, "head_dim": 64, "hidden_act": "silu", "hidden_size": 2048, "initializer_range": 0.02,
    "intermediate_size": 8192, "max_position_embeddings": 131072, "mlp_bias": False, "model_type": "llama",
    "num_attention_heads": 32, "num_hidden_layers": 16, "num_key_value_heads": 8, "pretraining_tp": 1, "rms_norm_eps": 1e-05,
    "rope_scaling": {"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0, "original_max_position_embeddings": 8192,
                     "rope_type": "llama3"},
    "rope_theta": 500000.0, "tie_word_embeddings": True, "torch_dtype": "bfloat16", "transformers_version": "4.45.0.dev0",
    "use_cache": True, "vocab_size": 128256,
}
MISTRAL_7B_V03 = {
    "architectures": ["MistralForCausalLM"], "attention_dropout": 0.0, "bos_token_id": 1, "eos_token_id": 2, "hidden_act": "silu",
    "hidden_size": 4096, "initializer_range": 0.02, "intermediate_size": 14336, "max_position_embeddings": 32768,
    "model_type": "mistral", "num_attention_heads": 32, "num_hidden_layers": 32, "num_key_value_heads": 8, "rms_norm_eps": 1e-05,
    "rope_theta": 1000000.0, "sliding_window": None, "tie_word_embeddings": False, "torch_dtype": "bfloat16",
    "transformers_version": "4.42.0.dev0", "use_cache": True, "vocab_size": 32768,
}
QWEN25_7B = {
    "architectures": ["Qwen2ForCausalLM"], "attention_dropout": 0.0, "bos_token_id": 151643, "eos_token_id": 151643,
    "hidden_act": "silu", "hidden_size": 3584, "initializer_range": 0.02, "intermediate_size": 18944,
    "max_position_embeddings": 131072, "max_window_layers": 28, "model_type": "qwen2", "num_attention_heads": 28,
    "num_hidden_layers": 28, "num_key_value_heads": 4, "rms_norm_eps": 1e-06, "rope_theta": 1000000.0, "sliding_window": 131072,
    "tie_word_embeddings": False, "torch_dtype": "bfloat16", "transformers_version": "4.43.1", "use_cache": True,
    "use_sliding_window": False, "vocab_size": 152064,
}
QWEN3_8B = {
    "architectures": ["Qwen3ForCausalLM"], "attention_bias": False, "attention_dropout": 0.0, "bos_token_id": 151643,
    "eos_token_id": 151645, "head_dim": 128, "hidden_act": "silu", "hidden_size": 4096, "initializer_range": 0.02,
    "intermediate_size": 12288, "max_position_embeddings": 40960, "max_window_layers": 36, "model_type": "qwen3",
    "num_attention_heads": 32, "num_hidden_layers": 36, "num_key_value_heads": 8, "rms_norm_eps": 1e-06, "rope_scaling": None,
    "rope_theta": 1000000, "sliding_window": None, "tie_word_embeddings": False, "torch_dtype": "bfloat16",
    "transformers_version": "4.51.0", "use_cache": True, "use_sliding_window": False, "vocab_size": 151936,
}
SMOLLM2_135M = {
    "architectures": ["LlamaForCausalLM"], "attention_bias": False, "attention_dropout": 0.0, "bos_token_id": 0, "eos_token_id": 0,
    "hidden_act": "silu", "hidden_size": 576, "initializer_range": 0.041666666666666664, "intermediate_size": 1536,
    "is_llama_config": True, "max_position_embeddings": 8192, "mlp_bias": False, "model_type": "llama", "num_attention_heads": 9,
    "num_hidden_layers": 30, "num_key_value_heads": 3, "pretraining_tp": 1, "rms_norm_eps": 1e-05, "rope_interleaved": False,
    "rope_scaling": None, "rope_theta": 100000, "tie_word_embeddings": True, "torch_dtype": "bfloat16",
    "transformers_version": "4.42.3", "use_cache": True, "vocab_size": 49152,
}


def transformers5(config):
    """The same model as transformers 5 saves it: rope_theta and rope_scaling folded into rope_parameters."""
    c = copy.deepcopy(config)
    rope = dict(c.pop("rope_scaling", None) or {"rope_type": "default"})
    rope["rope_theta"] = c.pop("rope_theta")
    c["rope_parameters"] = rope
    return c


def per_layer_type(config):
    """transformers 5's other form: one parameter dict per attention type (here only full attention)."""
    c = transformers5(config)
    c["rope_parameters"] = {"full_attention": c["rope_parameters"]}
    return c


CONFIGS = {
    "llama-3.1-8b": (LLAMA_31_8B, {"bos_token_id": 128000, "do_sample": True, "eos_token_id": 128001, "temperature": 0.6, "top_p": 0.9}),
    "llama-3.1-8b-rope-parameters": (transformers5(LLAMA_31_8B), None),
    "llama-3.1-8b-per-layer-type": (per_layer_type(LLAMA_31_8B), None),
    "llama-3.2-1b": (LLAMA_32_1B, {"bos_token_id": 128000, "do_sample": True, "eos_token_id": 128001, "temperature": 0.6, "top_p": 0.9}),
    "mistral-7b-v0.3": (MISTRAL_7B_V03, {"bos_token_id": 1, "eos_token_id": 2}),
    "qwen2.5-7b": (QWEN25_7B, {"bos_token_id": 151643, "do_sample": False, "eos_token_id": 151643, "max_new_tokens": 2048}),
    # Qwen2.5's model card: add this rope_scaling for inputs past 32,768 tokens (YaRN).
    "qwen2.5-7b-yarn": ({**QWEN25_7B, "rope_scaling": {"factor": 4.0, "original_max_position_embeddings": 32768, "type": "yarn"}}, None),
    "qwen3-8b": (QWEN3_8B, {"bos_token_id": 151643, "do_sample": True, "eos_token_id": [151645, 151643], "pad_token_id": 151643,
                            "temperature": 0.6, "top_k": 20, "top_p": 0.95}),
    "smollm2-135m": (SMOLLM2_135M, {"bos_token_id": 0, "eos_token_id": 0}),
    # For the eval agreement test: RoPE scalings whose effect shows within 128 positions.
    "llama3-scaled-short": ({**LLAMA_31_8B, "rope_theta": 10000.0, "rope_scaling": {
        "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 64, "rope_type": "llama3"}}, None),
    "llama-linear-short": ({**LLAMA_31_8B, "rope_theta": 10000.0, "rope_scaling": {"factor": 4.0, "rope_type": "linear"}}, None),
    # max_position_embeddings = factor × original, as in the real one (transformers derives YaRN's
    # attention factor from their ratio when both are given).
    "qwen2-yarn-short": ({**QWEN25_7B, "rope_theta": 10000.0, "max_position_embeddings": 256,
                          "rope_scaling": {"factor": 4.0, "original_max_position_embeddings": 64, "type": "yarn"}}, None),
}


def shrink(config, vocab_size):
    c = copy.deepcopy(config)
    heads, kv_heads = 4, 2
    c.update(num_hidden_layers=2, hidden_size=64, intermediate_size=128, num_attention_heads=heads, num_key_value_heads=kv_heads,
             vocab_size=vocab_size)
    if "head_dim" in c:  # keep head_dim independent of hidden_size where the family decouples them (Qwen3)
        c["head_dim"] = 32 if c["architectures"][0] == "Qwen3ForCausalLM" else 16
    if "max_window_layers" in c:
        c["max_window_layers"] = 2
    return c


def tensors(config, seed):
    rng = np.random.default_rng(seed)
    h, ff, v = config["hidden_size"], config["intermediate_size"], config["vocab_size"]
    hd = config.get("head_dim", h // config["num_attention_heads"])
    q, kv = config["num_attention_heads"] * hd, config["num_key_value_heads"] * hd
    arch = config["architectures"][0]

    def w(*shape, scale=None):
        return (rng.standard_normal(shape) * (scale or shape[-1] ** -0.5)).astype(np.float32)

    def norm(n):
        return (1.0 + 0.1 * rng.standard_normal(n)).astype(np.float32)

    out = {"model.embed_tokens.weight": w(v, h, scale=1.0), "model.norm.weight": norm(h)}
    for i in range(config["num_hidden_layers"]):
        p = f"model.layers.{i}."
        out.update({p + "input_layernorm.weight": norm(h), p + "post_attention_layernorm.weight": norm(h),
                    p + "self_attn.q_proj.weight": w(q, h), p + "self_attn.k_proj.weight": w(kv, h),
                    p + "self_attn.v_proj.weight": w(kv, h), p + "self_attn.o_proj.weight": w(h, q),
                    p + "mlp.gate_proj.weight": w(ff, h), p + "mlp.up_proj.weight": w(ff, h), p + "mlp.down_proj.weight": w(h, ff)})
        if arch == "Qwen2ForCausalLM":  # Qwen2's Q/K/V projections always carry biases
            out.update({p + "self_attn.q_proj.bias": w(q, scale=0.1), p + "self_attn.k_proj.bias": w(kv, scale=0.1),
                        p + "self_attn.v_proj.bias": w(kv, scale=0.1)})
        if arch == "Qwen3ForCausalLM":  # per-head RMSNorm of queries and keys
            out.update({p + "self_attn.q_norm.weight": norm(hd), p + "self_attn.k_norm.weight": norm(hd)})
    if not config.get("tie_word_embeddings", False):
        out["lm_head.weight"] = w(v, h)
    return out


def write_smollm2_tokenizer(gguf_path, out_dir):
    """SmolLM2's tokenizer.json + tokenizer_config.json as its own repository has them (digits apart,
    then GPT-2's byte-level BPE), rebuilt from the GGUF's vocabulary, merges and token types."""
    fields = gguf.GGUFReader(gguf_path).fields

    def strings(key):
        return [bytes(fields[key].parts[i]).decode("utf-8") for i in fields[key].data]

    def scalar(key):
        return int(np.asarray(fields[key].parts[-1])[0])

    tokens, merges = strings("tokenizer.ggml.tokens"), strings("tokenizer.ggml.merges")
    types = [int(np.asarray(fields["tokenizer.ggml.token_type"].parts[i])[0]) for i in fields["tokenizer.ggml.token_type"].data]
    added = [{"id": i, "content": t, "single_word": False, "lstrip": False, "rstrip": False, "normalized": False, "special": ty == 3}
             for i, (t, ty) in enumerate(zip(tokens, types)) if ty in (3, 4)]  # control and user-defined tokens
    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
    tokenizer = {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": added, "normalizer": None,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [{"type": "Digits", "individual_digits": True}, byte_level]},
        "post_processor": None, "decoder": byte_level,
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None, "end_of_word_suffix": None,
                  "fuse_unk": False, "byte_fallback": False, "ignore_merges": False, "vocab": {t: i for i, t in enumerate(tokens)},
                  "merges": [m.split(" ", 1) for m in merges]},
    }
    with open(Path(out_dir) / "tokenizer.json", "w", encoding="utf-8") as f:
        json.dump(tokenizer, f)
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": tokens[scalar("tokenizer.ggml.bos_token_id")],
              "eos_token": tokens[scalar("tokenizer.ggml.eos_token_id")], "add_bos_token": False, "add_eos_token": False}
    with open(Path(out_dir) / "tokenizer_config.json", "w", encoding="utf-8") as f:
        json.dump(config, f)
    return len(tokens)


def write_checkpoint(name, out_dir, smollm2_gguf):
    config, generation = CONFIGS[name]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    config = shrink(config, write_smollm2_tokenizer(smollm2_gguf, out_dir))
    with open(out_dir / "config.json", "w", encoding="utf-8") as f:
        json.dump(config, f, indent=2)
    if generation is not None:
        with open(out_dir / "generation_config.json", "w", encoding="utf-8") as f:
            json.dump(generation, f, indent=2)
    seed = sum(name.encode())  # stable across runs and Python versions
    save_file(tensors(config, seed), str(out_dir / "model.safetensors"), metadata={"format": "pt"})


if __name__ == "__main__":
    if sys.argv[1] == "list":
        print("\n".join(CONFIGS))
    else:
        write_checkpoint(sys.argv[1], sys.argv[2], sys.argv[3])
