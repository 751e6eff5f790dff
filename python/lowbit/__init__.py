"""lowbit: low-bit formats of LLM weights (bitsandbytes NF4/FP4/LLM.int8, every GGUF type) and back.

The same C++ library as the `lowbit` command. The command's jobs are functions here (inspect, quantize,
dequantize, plan, eval, imatrix, hessian: each returns what `--json` prints). `lowbit.functional` holds the torch
functions (bitsandbytes' functional API on lowbit's kernels) and `lowbit.integrations.bitsandbytes` routes
bitsandbytes to them; torch is imported only when those modules are.
"""
import os as _os

from . import _lowbit
from .errors import LowbitError
from .jobs import dequantize, eval, hessian, imatrix, plan, quantize

__all__ = ["LowbitError", "inspect", "quantize", "dequantize", "plan", "eval", "imatrix", "hessian", "functional", "integrations"]
__version__ = "0.1.0"


def inspect(path):
    """Per tensor and in total: format, logical shape, parameters, stored elements, bytes, bits per weight
    (`lowbit inspect --json`), for a .gguf, a .safetensors file or a Hugging Face directory."""
    return _lowbit.inspect(_os.fspath(path))


def __getattr__(name):
    if name in ("functional", "integrations"):  # import torch: only when asked for
        import importlib

        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'lowbit' has no attribute {name!r}")
