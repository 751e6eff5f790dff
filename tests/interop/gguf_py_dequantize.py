#!/usr/bin/env python3
"""Dequantizes every tensor of a GGUF file with gguf-py's own numpy dequantizers and compares it with
lowbit's dequantization of the same file (a .safetensors written by `lowbit dequantize`).
Prints JSON: per tensor, the type, whether gguf-py supports it, and the max |difference|."""
import json
import struct
import sys

import gguf
import numpy as np
from gguf import quants

reader = gguf.GGUFReader(sys.argv[1])

def load_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        begin, end = info["data_offsets"]
        raw = data[begin:end]
        if info["dtype"] == "F32":
            values = np.frombuffer(raw, dtype=np.float32)
        elif info["dtype"] == "F16":
            values = np.frombuffer(raw, dtype=np.float16).astype(np.float32)
        else:  # BF16: the high half of a float32
            values = (np.frombuffer(raw, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)
        out[name] = values.reshape(info["shape"])
    return out

mine = load_safetensors(sys.argv[2])
report = []
for t in reader.tensors:
    entry = {"name": t.name, "type": t.tensor_type.name}
    try:
        values = quants.dequantize(t.data, t.tensor_type)
    except NotImplementedError:
        entry["supported"] = False
        report.append(entry)
        continue
    entry["supported"] = True
    ours = mine[t.name].reshape(values.shape)
    entry["max_abs_diff"] = float(np.max(np.abs(values.astype(np.float32) - ours))) if values.size else 0.0
    report.append(entry)
json.dump(report, sys.stdout)
