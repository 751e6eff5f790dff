"""lowbit: low-bit formats of LLM weights (bitsandbytes NF4/FP4/LLM.int8, every GGUF type) and back.

The same C++ library as the `lowbit` command. `lowbit.functional` holds the torch functions
(bitsandbytes' functional API on lowbit's kernels); torch is imported only when that module is.
"""
import os as _os

from . import _lowbit
from .errors import LowbitError

__all__ = ["LowbitError", "inspect", "functional"]
__version__ = "0.1.0"


def inspect(path):
    """Per tensor and in total: format, logical shape, parameters, stored elements, bytes, bits per weight
    (`lowbit inspect --json`), for a .gguf, a .safetensors file or a Hugging Face directory."""
    return _lowbit.inspect(_os.fspath(path))


def __getattr__(name):
    if name == "functional":  # imports torch: only when asked for
        from . import functional

        return functional
    raise AttributeError(f"module 'lowbit' has no attribute {name!r}")
