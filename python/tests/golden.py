"""Helpers for reading the golden bitsandbytes files (../shared/golden/bnb) in the tests."""
import json

import torch


def metadata(path):
    """A safetensors file's __metadata__ (the golden case's parameters)."""
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        return json.loads(f.read(n))["__metadata__"]


def bits(t):
    """The bit patterns, so that -0.0 and 0.0 differ."""
    return t.view(torch.int32 if t.element_size() == 4 else torch.int16)
