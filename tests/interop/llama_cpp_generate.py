#!/usr/bin/env python3
"""llama.cpp itself (through llama-cpp-python) loads GGUF files and generates greedily from each.
usage: llama_cpp_generate.py MODEL.gguf...  — prints one line per model: its path and the text."""
import sys

from llama_cpp import Llama

PROMPT = "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"
for path in sys.argv[1:]:
    llm = Llama(model_path=path, n_ctx=256, n_threads=2, verbose=False)
    out = llm(PROMPT, max_tokens=20, temperature=0)
    print(f"{path}: {out['choices'][0]['text']!r}", flush=True)
