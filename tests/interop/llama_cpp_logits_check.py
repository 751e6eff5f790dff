#!/usr/bin/env python3
"""Compares lowbit's forward pass with llama.cpp's on the same GGUF and the same tokens.

usage: llama_cpp_logits_check.py MODEL.gguf LOGITS_FILE
LOGITS_FILE comes from `lowbit eval MODEL.gguf --text T --save-logits LOGITS_FILE` (llama.cpp's
--kl-divergence-base layout: the windows' tokens, then per scored position the log-probabilities as
uint16 steps). llama.cpp (llama-cpp-python) evaluates the same windows; the script prints the largest
|difference| of log-probabilities, the mean and max KL-divergence, and the top-1 agreement."""
import struct
import sys

import numpy as np
from llama_cpp import Llama

model_path, logits_path = sys.argv[1], sys.argv[2]
raw = open(logits_path, "rb").read()
assert raw[:8] == b"_logits_", "not a logits file"
n_ctx, n_vocab, n_chunk = struct.unpack("<Iii", raw[8:20])
tokens = np.frombuffer(raw, dtype=np.int32, count=n_chunk * n_ctx, offset=20).reshape(n_chunk, n_ctx)
record = 2 * ((n_vocab + 1) // 2) + 4
first = n_ctx // 2
records = np.frombuffer(raw, dtype=np.uint16, offset=20 + 4 * n_chunk * n_ctx).reshape(n_chunk, n_ctx - 1 - first, record)

llm = Llama(model_path=model_path, n_ctx=n_ctx, n_batch=n_ctx, n_threads=2, logits_all=True, verbose=False)
max_diff, klds, agree, count = 0.0, [], 0, 0
for c in range(n_chunk):
    llm.reset()
    llm.eval(tokens[c].tolist())  # the file holds the window's tokens with BOS already first
    scores = np.array(llm.scores[:n_ctx], dtype=np.float64)
    for j in range(first, n_ctx - 1):
        rec = records[c, j - first]
        scale, min_log_prob = struct.unpack("<ff", rec[:4].tobytes())
        ours = scale * rec[4:4 + n_vocab].astype(np.float64) + min_log_prob
        l = scores[j]
        theirs = l - l.max() - np.log(np.exp(l - l.max()).sum())
        mask = ours > -16 + 1e-3  # below the floor lowbit stores only "at most -16"
        max_diff = max(max_diff, float(np.abs(ours[mask] - theirs[mask]).max()))
        p = np.exp(theirs)
        klds.append(float((p * (theirs - ours)).sum()))
        agree += int(np.argmax(l) == np.argmax(ours))
        count += 1
print(f"windows {n_chunk} x {n_ctx}, {count} predictions: max |dlogprob| {max_diff:.5f}, "
      f"KLD(llama.cpp || lowbit) mean {np.mean(klds):.6f} max {np.max(klds):.6f}, top-1 agreement {agree / count:.4f}")
