#!/usr/bin/env python3
"""What a HF -> GGUF conversion decided, read with gguf-py: every metadata key (type and value; long
arrays as their length and SHA-256), every tensor's name, type and shape, and rope_freqs.weight's
values. The parity fixtures (tests/data/hf_config) hold this for llama.cpp's converter; the test
prints it for lowbit's conversion of the same checkpoint and compares.

usage: gguf_summary.py FILE.gguf
"""
import hashlib
import json
import sys

import gguf
import numpy as np


def value_of(field):
    types = field.types
    if types[0] == gguf.GGUFValueType.ARRAY:
        if types[1] == gguf.GGUFValueType.STRING:
            items = [bytes(field.parts[i]).decode("utf-8") for i in field.data]
        else:
            items = [np.asarray(field.parts[i]).tolist()[0] for i in field.data]
        if len(items) > 16:
            return {"count": len(items), "sha256": hashlib.sha256(json.dumps(items).encode()).hexdigest()}
        return items
    if types[0] == gguf.GGUFValueType.STRING:
        return bytes(field.parts[-1]).decode("utf-8")
    return np.asarray(field.parts[-1]).tolist()[0]


def summary(path):
    reader = gguf.GGUFReader(path)
    out = {"kv": {}, "tensors": [], "rope_freqs": None}
    for name, field in reader.fields.items():
        if name.startswith("GGUF."):
            continue
        out["kv"][name] = {"type": "/".join(t.name for t in field.types), "value": value_of(field)}
    for t in reader.tensors:
        out["tensors"].append({"name": t.name, "type": t.tensor_type.name, "ne": [int(x) for x in t.shape]})
        if t.name == "rope_freqs.weight":
            values = np.asarray(t.data, dtype=np.float32)
            out["rope_freqs"] = {"values": values.tolist(), "sha256": hashlib.sha256(values.tobytes()).hexdigest()}
    out["tensors"].sort(key=lambda t: t["name"])
    return out


if __name__ == "__main__":
    print(json.dumps(summary(sys.argv[1]), sort_keys=True))  # one line: the tests read the last line
