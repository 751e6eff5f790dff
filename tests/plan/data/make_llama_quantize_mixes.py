#!/usr/bin/env python3
"""Records llama-quantize's per-tensor type choices for every mix lowbit names, on synthetic models.

Writes three llama GGUFs of zeros (a dense model with GQA 8, a dense model with GQA 2 and tied
embeddings, an 8-expert MoE), runs `llama-quantize --dry-run [--imatrix imatrix.dat] MODEL MIX` for
each mix with and without an importance matrix, and writes one table per model: the tensor, its
dimensions (innermost first) and the type llama-quantize gives it per mix ("-": left unquantized).
tests/plan/llama_cpp_mix_test.cpp checks lowbit's TypeSelector against the table.

usage: make_llama_quantize_mixes.py LLAMA_QUANTIZE OUT.txt   (needs the gguf package)
"""
import re
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import gguf

MIXES = ["Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q2_K_S", "Q3_K_S", "Q3_K_M", "Q3_K_L", "Q4_K_S", "Q4_K_M",
         "Q5_K_S", "Q5_K_M", "Q6_K", "IQ4_NL", "IQ4_XS", "IQ1_S", "IQ1_M", "IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ2_M",
         "IQ3_XXS", "IQ3_XS", "IQ3_S", "IQ3_M", "TQ1_0", "TQ2_0", "MXFP4_MOE", "Q1_0", "Q2_0"]

N_EMBD, N_FF, N_VOCAB, HEAD_DIM = 256, 512, 512, 32

MODELS = {
    # name: (n_layer, n_head, n_head_kv, n_expert, has_output)
    "dense_gqa8": (16, 8, 1, 0, True),
    "dense_gqa2_tied": (16, 8, 4, 0, False),
    "moe8": (8, 8, 2, 8, True),
}


def tensors_of(n_layer, n_head, n_head_kv, n_expert, has_output):
    """(name, ne innermost first) in the order convert_hf_to_gguf writes a llama model."""
    out = [("token_embd.weight", (N_EMBD, N_VOCAB))]
    for i in range(n_layer):
        p = f"blk.{i}."
        out += [(p + "attn_norm.weight", (N_EMBD,)), (p + "attn_q.weight", (N_EMBD, n_head * HEAD_DIM)),
                (p + "attn_k.weight", (N_EMBD, n_head_kv * HEAD_DIM)), (p + "attn_v.weight", (N_EMBD, n_head_kv * HEAD_DIM)),
                (p + "attn_output.weight", (n_head * HEAD_DIM, N_EMBD)), (p + "ffn_norm.weight", (N_EMBD,))]
        if n_expert:
            out += [(p + "ffn_gate_inp.weight", (N_EMBD, n_expert)), (p + "ffn_gate_exps.weight", (N_EMBD, N_FF, n_expert)),
                    (p + "ffn_up_exps.weight", (N_EMBD, N_FF, n_expert)), (p + "ffn_down_exps.weight", (N_FF, N_EMBD, n_expert))]
        else:
            out += [(p + "ffn_gate.weight", (N_EMBD, N_FF)), (p + "ffn_up.weight", (N_EMBD, N_FF)),
                    (p + "ffn_down.weight", (N_FF, N_EMBD))]
    out.append(("output_norm.weight", (N_EMBD,)))
    if has_output:
        out.append(("output.weight", (N_EMBD, N_VOCAB)))
    return out


def write_model(path, spec):
    n_layer, n_head, n_head_kv, n_expert, has_output = spec
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("synthetic")
    w.add_file_type(0)
    w.add_context_length(256)
    w.add_embedding_length(N_EMBD)
    w.add_block_count(n_layer)
    w.add_feed_forward_length(N_FF)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_head_kv)
    w.add_rope_dimension_count(HEAD_DIM)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_vocab_size(N_VOCAB)
    if n_expert:
        w.add_expert_count(n_expert)
        w.add_expert_used_count(2)
    for name, ne in tensors_of(*spec):
        w.add_tensor(name, np.zeros(tuple(reversed(ne)), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def write_imatrix(path):
    """A legacy imatrix.dat of one entry: llama-quantize then quantizes as with an importance matrix."""
    name = b"blk.0.attn_q.weight"
    with open(path, "wb") as f:
        f.write(struct.pack("<ii", 1, len(name)) + name + struct.pack("<ii", 1, N_EMBD))
        f.write(np.ones(N_EMBD, dtype=np.float32).tobytes())
        f.write(struct.pack("<ii", 1, 9) + b"synthetic")


LINE = re.compile(r"\[\s*\d+/\s*\d+\]\s+(\S+)\s+- \[.*?\], type =\s*\S+, size =\s*[\d.]+ MiB(?: ->\s*[\d.]+ MiB \((\S+)\))?")


def choices(quantize, model, mix, imatrix):
    cmd = [quantize, "--dry-run"] + (["--imatrix", str(imatrix)] if imatrix else []) + [str(model), mix]
    run = subprocess.run(cmd, capture_output=True, text=True)
    if run.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{run.stderr[-3000:]}")
    found = {m.group(1): m.group(2) or "-" for m in LINE.finditer(run.stdout + run.stderr)}
    return found


def main():
    quantize, out = sys.argv[1], Path(sys.argv[2])
    lines = ["# llama-quantize's per-tensor types for each mix (llama.cpp 0c1e57098, as vendored by llama-cpp-python 0.3.36:",
             "# its sdist's vendor/llama.cpp, cmake -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON -DLLAMA_CURL=OFF, target llama-quantize),",
             "# made by: build/venv/bin/python tests/plan/data/make_llama_quantize_mixes.py LLAMA_QUANTIZE " + sys.argv[2],
             "# which runs, per synthetic model below and mix: llama-quantize --dry-run [--imatrix imatrix.dat] MODEL.gguf MIX",
             "# A column MIX+imatrix was run with a (one-entry) importance matrix. '-': not quantized."]
    with tempfile.TemporaryDirectory() as tmp:
        imatrix = Path(tmp) / "imatrix.dat"
        write_imatrix(imatrix)
        for model_name, spec in MODELS.items():
            path = Path(tmp) / f"{model_name}.gguf"
            write_model(path, spec)
            columns = [(mix, with_imatrix) for mix in MIXES for with_imatrix in (False, True)]
            table = {col: choices(quantize, path, col[0], imatrix if col[1] else None) for col in columns}
            n_layer, n_head, n_head_kv, n_expert, has_output = spec
            lines.append(f"model {model_name} n_layer={n_layer} n_head={n_head} n_head_kv={n_head_kv} n_expert={n_expert} "
                         f"has_output={int(has_output)}")
            lines.append("columns " + " ".join(mix + ("+imatrix" if im else "") for mix, im in columns))
            for name, ne in tensors_of(*spec):
                types = [table[col].get(name, "?") for col in columns]
                lines.append(f"{name} {'x'.join(map(str, ne))} " + " ".join(types))
    out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
