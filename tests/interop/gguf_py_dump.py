#!/usr/bin/env python3
"""Reads a GGUF file with llama.cpp's own Python package (gguf-py) and prints what it found as JSON:
metadata (type and value) and tensor infos. lowbit's tests compare it with what lowbit wrote."""
import json
import sys

import gguf
import numpy as np


def field_value(field):
    types = field.types
    if types[0] == gguf.GGUFValueType.ARRAY:
        if len(types) > 2:  # nested arrays: gguf-py exposes no decoded value for them; report the raw parts
            return {"nested": True, "count": len(field.data)}
        if types[1] == gguf.GGUFValueType.STRING:
            return [bytes(field.parts[i]).decode("utf-8") for i in field.data]
        return [np.asarray(field.parts[i]).tolist()[0] for i in field.data]
    if types[0] == gguf.GGUFValueType.STRING:
        return bytes(field.parts[-1]).decode("utf-8")
    return np.asarray(field.parts[-1]).tolist()[0]


def main(path):
    reader = gguf.GGUFReader(path)
    out = {"kv": {}, "tensors": []}
    for name, field in reader.fields.items():
        if name.startswith("GGUF."):
            continue
        out["kv"][name] = {"types": [t.name for t in field.types], "value": field_value(field)}
    for t in reader.tensors:
        out["tensors"].append({
            "name": t.name,
            "type": t.tensor_type.name,
            "ne": [int(x) for x in t.shape],
            "bytes": int(t.n_bytes),
            "data_sum": int(np.frombuffer(t.data.tobytes(), dtype=np.uint8).astype(np.uint64).sum()),
        })
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main(sys.argv[1])
