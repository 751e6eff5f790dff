"""The `lowbit` command's jobs as functions: each returns the dict `lowbit <command> --json` prints.

Paths may be str or os.PathLike. `progress`: a callable progress(what, done, total), False for none,
or None (the default): a tqdm bar on a terminal when tqdm is installed. Errors raise lowbit.LowbitError
with the file, tensor and byte offset where lowbit knows them. The GIL is released while a job runs.
"""
import os
import sys

from . import _lowbit


def _path(p):
    return os.fspath(p) if p is not None else ""


def _paths(ps):
    if ps is None:
        return []
    if isinstance(ps, (str, os.PathLike)):
        return [os.fspath(ps)]
    return [os.fspath(p) for p in ps]


class _TqdmProgress:
    """One tqdm bar per phase the library reports (begin(what, total) ... advance)."""

    def __init__(self, tqdm):
        self._tqdm, self._bar, self._what = tqdm, None, None

    def __call__(self, what, done, total):
        if self._bar is None or what != self._what or done == 0:
            self.close()
            self._bar, self._what = self._tqdm(total=total or None, desc=what, leave=False), what
        self._bar.n = done
        self._bar.refresh()

    def close(self):
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def _run(job, progress, **kwargs):
    bar = None
    if progress is None:
        try:
            from tqdm.auto import tqdm
        except ImportError:
            tqdm = None
        if tqdm is not None and sys.stderr.isatty():
            progress = bar = _TqdmProgress(tqdm)
    if progress is False:
        progress = None
    try:
        return job(progress=progress, **kwargs)
    finally:
        if bar is not None:
            bar.close()


def quantize(input, output, format=None, *, mix=None, plan=None, bpw=None, target="gguf", rules=None, imatrix=None, gptq=None,
             gptq_text=None, gptq_chunks=32, tensor_types=None, blocksize=64, double_quant=False, skip=None, probe_text=None,
             probe_chunks=4, device="auto", allow_nonfinite=False, force=False, progress=None):
    """`lowbit quantize`: to GGUF (format="q4_K", or mix="Q4_K_M"), to a bitsandbytes checkpoint (format="nf4" / "fp4" /
    "int8" with blocksize, double_quant, skip), or by a plan (plan="plan.json", or bpw=4.5 to plan inline for `target`).
    tensor_types: {"GLOB": "TYPE"} or ["GLOB=TYPE", ...], first match wins. gptq: a Hessian file (`lowbit hessian`)
    for GPTQ's error feedback into the GGUF types that have a path (a plan made with one brings its own); or gptq_text:
    a calibration text the Hessians are collected on first (gptq_chunks windows of 512 tokens, in a scratch file)."""
    if isinstance(tensor_types, dict):
        tensor_types = [f"{glob}={t}" for glob, t in tensor_types.items()]
    return _run(_lowbit.quantize, progress, input=_path(input), output=_path(output), format=format or "", mix=mix or "",
                plan=_path(plan), bpw=float(bpw or 0), target=target, rules=_path(rules), probe_text=_path(probe_text),
                probe_chunks=int(probe_chunks), device=device, imatrix=_path(imatrix), gptq=_path(gptq),
                gptq_text=_path(gptq_text), gptq_chunks=int(gptq_chunks), tensor_types=list(tensor_types or []),
                blocksize=int(blocksize), double_quant=bool(double_quant), skip=_paths(skip), allow_nonfinite=bool(allow_nonfinite),
                force=bool(force))


def dequantize(input, output, dtype=None, *, allow_nonfinite=False, force=False, progress=None):
    """`lowbit dequantize`: a GGUF to .gguf / .safetensors / a Hugging Face directory, or a bitsandbytes checkpoint back to
    plain safetensors; dtype "f32", "f16" or "bf16" (default: GGUF f32, bitsandbytes each weight's recorded dtype)."""
    return _run(_lowbit.dequantize, progress, input=_path(input), output=_path(output), dtype=dtype or "",
                allow_nonfinite=bool(allow_nonfinite), force=bool(force))


def plan(model, bpw, output, *, target="gguf", imatrix=None, text=None, rules=None, probe_text=None, probe_chunks=4, device="auto",
         gptq=None, gptq_text=None, gptq_chunks=32, force=False, progress=None):
    """`lowbit plan`: a format per tensor for `bpw` bits per weight, written to `output` (plan.json, with plan.svg and
    plan.html beside it, and for a GGUF plan measured on `text` the importance matrix, plan.imatrix.gguf, that
    quantize(plan=...) then quantizes with). gptq: a Hessian file; candidates are measured as GPTQ writes them.
    gptq_text: collect the Hessians on this text first, kept beside the plan as plan.hessian.gguf."""
    return _run(_lowbit.plan, progress, model=_path(model), bpw=float(bpw), output=_path(output), target=target, imatrix=_path(imatrix),
                text=_path(text), rules=_path(rules), probe_text=_path(probe_text), probe_chunks=int(probe_chunks), device=device,
                gptq=_path(gptq), gptq_text=_path(gptq_text), gptq_chunks=int(gptq_chunks), force=bool(force))


def eval(model, text, *, ctx=512, chunks=0, base=None, kld_base=None, save_logits=None, lora=None, lora_scale=None, base_lora=None,
         base_lora_scale=None, device="auto", force=False, progress=None):
    """`lowbit eval`: perplexity on `text` in windows of `ctx` tokens; with `base` (a model) or `kld_base` (saved
    log-probabilities) also the KL-divergence, top-1 agreement and Δppl."""
    return _run(_lowbit.eval, progress, model=_path(model), text=_path(text), ctx=int(ctx), chunks=int(chunks), base=_path(base),
                kld_base=_path(kld_base), save_logits=_path(save_logits), lora=_paths(lora), lora_scale=[float(s) for s in lora_scale or []],
                base_lora=_paths(base_lora), base_lora_scale=[float(s) for s in base_lora_scale or []], device=device, force=bool(force))


def hessian(model, text, output, *, ctx=512, chunks=0, device="auto", force=False, progress=None):
    """`lowbit hessian`: GPTQ's Hessians (XᵀX of every linear layer's input, float32) collected on `text`, for
    quantize(gptq=...) and plan(gptq=...); returns {"output", "inputs", "weights", "tokens", "chunks", "ctx"}."""
    return _run(_lowbit.hessian, progress, model=_path(model), text=_path(text), output=_path(output), ctx=int(ctx), chunks=int(chunks),
                device=device, force=bool(force))


def imatrix(model, text, output, *, ctx=512, chunks=0, device="auto", force=False, progress=None):
    """`lowbit imatrix`: an importance matrix (llama.cpp's imatrix GGUF) collected on `text`; returns
    {"output", "weights", "chunks", "ctx"}."""
    return _run(_lowbit.imatrix, progress, model=_path(model), text=_path(text), output=_path(output), ctx=int(ctx), chunks=int(chunks),
                device=device, force=bool(force))
