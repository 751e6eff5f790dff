#!/usr/bin/env python3
"""bitsandbytes and cuBLAS reference figures for lowbit's CUDA kernels (issue 5).

Run on a CUDA machine (written for an H100, torch 2.x), with bitsandbytes 0.50 importable from the
repository's .deps/py:

    PYTHONPATH=.deps/py python3 bench/bnb_reference_bench.py [--json out.json] [--graph]

What it measures, each beside a reference timed in the same run:
  1. NF4 `bitsandbytes.functional.dequantize_4bit` to bf16, blocksize 64, with and without double
     quant, on 4096x4096, 4096x14336 and 14336x4096: µs, GB/s (packed codes + absmax, or the nested
     8-bit codes + their absmax + offset, read; bf16 written) and the ratio of GB/s to a torch uint8
     `dst.copy_(src)` moving the same number of bytes (read + written).
  2. `bitsandbytes.matmul_4bit` (NF4, double quant, bf16 activations) for 1, 8, 16, 64 and 512 tokens
     on weights (out, in) = 14336x4096 and 4096x14336; ratio = cuBLAS bf16 µs / bnb µs (> 1: bnb faster).
  3. LLM.int8 through `bitsandbytes.nn.Linear8bitLt` (threshold 6.0 and 0.0) on 4096x4096 with fp16
     activations, 1, 16 and 512 tokens; ratio = cuBLAS fp16 µs / bnb µs. The activations are heavy
     tailed (Student-t, 4 degrees of freedom) held under 6, with every 256th column ten times larger,
     so threshold 6.0 finds a few outlier columns, as lowbit's own bench does; the count is in the op.
  4. The cuBLAS references alone: `F.linear` with a 16-bit weight, fp16 and bf16, 1..512 tokens.

Method, as lowbit's (src/kernels/cuda/benchmark.cu): CUDA events around each call, 5 warm-up calls,
the median of 30 timed ones, the calls rotating among distinct input/weight sets so that one pass
over the sets moves more than twice the L2 (at least 100 MB) and no call finds its data cached.
By default a timed call is the Python call itself, so where the device work is shorter than the
host's launch work the figure is the host's: the cost of calling from Python. --graph instead
captures each set's call into a CUDA graph and times its replays (device time, as lowbit's bench
does); a call that cannot be captured (LLM.int8 with a threshold syncs with the host) is timed
eagerly and marked so. Each bitsandbytes part runs on its own, so one failure keeps the rest:
the table is printed all the same, the failures listed under it, and the exit status is then 2.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import traceback
from dataclasses import asdict, dataclass
from typing import Callable, Optional

import torch
import torch.nn.functional as F

WARMUP = 5
REPS = 30
MAX_SETS = 64
DEQUANT_SHAPES = ((4096, 4096), (4096, 14336), (14336, 4096))  # weight (rows, cols)
MATMUL_SHAPES = ((14336, 4096), (4096, 14336))  # weight (out, in)
INT8_SHAPE = (4096, 4096)
TOKENS = (1, 8, 16, 64, 512)
INT8_TOKENS = (1, 16, 512)
BLOCKSIZE = 64


@dataclass
class Row:
    op: str
    shape: str
    tokens: Optional[int]  # activation rows for the matmuls; None for dequantize and copy
    us: float
    ratio: float  # dequantize: GB/s over the copy's; matmuls: reference µs / µs (> 1: faster)
    reference: str
    ref_us: float
    gbps: float  # bytes moved (read + written) per second, 1e9; a matmul's = weight + x + y


def nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def shape_name(shape: tuple[int, int]) -> str:
    return f"{shape[0]}x{shape[1]}"


class Bench:
    def __init__(self, graph: bool):
        self.graph = graph
        self.device = torch.device("cuda")
        props = torch.cuda.get_device_properties(self.device)
        self.props = props
        self.l2_bytes = int(getattr(props, "L2_cache_size", 50 << 20))
        # Data of one pass over the sets must exceed twice the L2: at least 100 MB as lowbit uses.
        self.rotate_bytes = max(100 << 20, 2 * self.l2_bytes)
        self.rows: list[Row] = []
        self.failures: list[str] = []
        self.copy_gbps_cache: dict[int, float] = {}
        self.cublas_cache: dict[tuple[torch.dtype, tuple[int, int], int], float] = {}
        self.student_t = torch.distributions.StudentT(torch.tensor(4.0, device=self.device))

    # ---- method ----

    def sets_for(self, bytes_per_set: int) -> int:
        """As lowbit's sets_for: enough sets that one pass over them moves more than rotate_bytes."""
        return int(min(max(self.rotate_bytes // bytes_per_set + 1, 2), MAX_SETS))

    def median_us(self, sets: int, call: Callable[[int], object], capturable: bool = True) -> tuple[float, str]:
        """Median µs of call(set) over REPS timed calls after WARMUP, sets in rotation; and the mode used."""
        with torch.inference_mode():
            run = None
            mode = "eager"
            if self.graph and capturable:
                try:
                    run = self._capture(sets, call)
                    mode = "graph"
                except Exception as e:  # a host sync or an uncapturable API inside the call
                    print(f"    graph capture failed ({type(e).__name__}: {e}); timing eager calls", file=sys.stderr)
                    try:
                        torch.cuda.synchronize()
                    except Exception:
                        pass
            if run is None:
                for s in range(sets):  # one call per set first: lazy initialisation, allocator growth
                    call(s)
                torch.cuda.synchronize()
                run = call
            starts = [torch.cuda.Event(enable_timing=True) for _ in range(REPS)]
            ends = [torch.cuda.Event(enable_timing=True) for _ in range(REPS)]
            for i in range(WARMUP):
                run(i % sets)
            for i in range(REPS):
                # The rotation goes on from the warm-ups: the first timed call must not reuse the
                # last warm-up's set, which would still be in L2.
                s = (WARMUP + i) % sets
                starts[i].record()
                run(s)
                ends[i].record()
            torch.cuda.synchronize()
        times = sorted(a.elapsed_time(b) * 1e3 for a, b in zip(starts, ends))
        return times[REPS // 2], mode  # the upper median, as lowbit's nth_element at REPS / 2

    def _capture(self, sets: int, call: Callable[[int], object]) -> Callable[[int], None]:
        # Warm up on a side stream before capture, as torch's CUDA-graph notes ask (cuBLAS
        # workspaces, bitsandbytes' cuBLASLt context, lazy module state).
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for s in range(sets):
                call(s)
        torch.cuda.current_stream().wait_stream(side)
        torch.cuda.synchronize()
        graphs, outputs = [], []
        for s in range(sets):
            g = torch.cuda.CUDAGraph()
            with torch.cuda.graph(g):
                outputs.append(call(s))  # kept alive with the graph; its replays write there
            graphs.append(g)
        torch.cuda.synchronize()

        def replay(s: int) -> None:
            graphs[s].replay()

        replay.outputs = outputs  # type: ignore[attr-defined]
        return replay

    def attempt(self, label: str, fn: Callable[[], None]) -> None:
        """Runs one part; a failure is recorded and the run goes on."""
        print(f"-- {label}", file=sys.stderr, flush=True)
        try:
            fn()
        except Exception as e:
            self.failures.append(f"{label}: {type(e).__name__}: {e}")
            traceback.print_exc()
        finally:
            gc.collect()
            torch.cuda.empty_cache()

    def emit(self, row: Row) -> None:
        self.rows.append(row)
        print(f"   {format_row(row)}", file=sys.stderr, flush=True)

    def tag(self, op: str, mode: str) -> str:
        # In --graph mode mark the rows that had to be timed eagerly; in eager mode all are.
        return f"{op} [eager]" if self.graph and mode == "eager" else op

    # ---- data ----

    def heavy_tailed(self, shape: tuple[int, ...], scale: float, dtype: torch.dtype) -> torch.Tensor:
        """Student-t (4 degrees of freedom) values: tails like real weights and activations, never zeros."""
        return (self.student_t.sample(shape) * scale).to(dtype)

    def llm_int8_activations(self, tokens: int, cols: int) -> torch.Tensor:
        # Bulk under the 6.0 threshold, every 256th column (index 7 mod 256) ten times larger: the few
        # systematic outlier features LLM.int8 decomposes (lowbit's fill_activations_f16 does the same).
        x = self.heavy_tailed((tokens, cols), 1.0, torch.float32).clamp_(-5.5, 5.5)
        x[:, 7::256] *= 10.0
        return x.to(torch.float16)

    # ---- references ----

    def copy_gbps(self, moved: int) -> float:
        """GB/s of a torch uint8 dst.copy_(src) moving `moved` bytes (read + written); cached per size."""
        if moved in self.copy_gbps_cache:
            return self.copy_gbps_cache[moved]
        half = (moved + 1) // 2
        sets = self.sets_for(2 * half)
        src = [torch.randint(0, 256, (half,), dtype=torch.uint8, device=self.device) for _ in range(sets)]
        dst = [torch.empty_like(t) for t in src]
        us, _ = self.median_us(sets, lambda s: dst[s].copy_(src[s]))
        gbps = 2 * half / us / 1e3
        self.copy_gbps_cache[moved] = gbps
        return gbps

    def copy_row(self, moved: int) -> None:
        gbps = self.copy_gbps(moved)
        us = moved / gbps / 1e3
        self.emit(Row(f"torch uint8 copy_ ({moved / 1e6:.0f} MB moved)", "-", None, us, 1.0, "torch uint8 copy_", us, gbps))

    def cublas(self, dtype: torch.dtype, shape: tuple[int, int], token_counts: tuple[int, ...]) -> dict[int, float]:
        """µs of F.linear(x, W) with a 16-bit weight (cuBLAS) for each token count; measures and emits
        the ones not yet measured in this run."""
        missing = [t for t in token_counts if (dtype, shape, t) not in self.cublas_cache]
        if missing:
            out_f, in_f = shape
            sets = self.sets_for(out_f * in_f * 2)
            weights = [self.heavy_tailed(shape, 0.02, dtype) for _ in range(sets)]
            xs = [self.heavy_tailed((max(missing), in_f), 1.0, dtype) for _ in range(sets)]
            name = f"cuBLAS {dtype_name(dtype)}"
            for tokens in missing:
                us, mode = self.median_us(sets, lambda s: F.linear(xs[s][:tokens], weights[s]))
                self.cublas_cache[(dtype, shape, tokens)] = us
                moved = nbytes(weights[0]) + 2 * tokens * (in_f + out_f)
                self.emit(Row(self.tag(f"{name} F.linear", mode), shape_name(shape), tokens, us, 1.0, name, us,
                              moved / us / 1e3))
            del weights, xs
        return {t: self.cublas_cache[(dtype, shape, t)] for t in token_counts}

    # ---- 1. NF4 dequantize ----

    def dequantize(self, bnb, shape: tuple[int, int], double_quant: bool) -> None:
        def quantize():
            w = self.heavy_tailed(shape, 0.02, torch.bfloat16)
            return bnb.functional.quantize_4bit(w, blocksize=BLOCKSIZE, compress_statistics=double_quant,
                                                quant_type="nf4")

        first = quantize()
        packed, state = first
        out_bytes = shape[0] * shape[1] * 2
        moved = nbytes(packed) + scale_bytes(state) + out_bytes
        sets = self.sets_for(moved)
        weights = [first] + [quantize() for _ in range(sets - 1)]
        outs = [torch.empty(shape, dtype=torch.bfloat16, device=self.device) for _ in range(sets)]

        def call(s: int):
            packed, state = weights[s]
            return bnb.functional.dequantize_4bit(packed, quant_state=state, out=outs[s])

        us, mode = self.median_us(sets, call)
        gbps = moved / us / 1e3
        ref_gbps = self.copy_gbps(moved)
        op = f"bnb dequantize_4bit nf4{'+dq' if double_quant else ''} -> bf16"
        self.emit(Row(self.tag(op, mode), shape_name(shape), None, us, gbps / ref_gbps, "torch uint8 copy_",
                      moved / ref_gbps / 1e3, gbps))

    # ---- 2. 4-bit matmul ----

    def matmul_4bit(self, bnb, shape: tuple[int, int]) -> None:
        out_f, in_f = shape
        refs = self.cublas(torch.bfloat16, shape, TOKENS)

        def quantize():
            # Quantized from the (out, in) weight, as Linear4bit stores it; matmul_4bit gets its .t().
            w = self.heavy_tailed(shape, 0.02, torch.bfloat16)
            return bnb.functional.quantize_4bit(w, blocksize=BLOCKSIZE, compress_statistics=True, quant_type="nf4")

        first = quantize()
        weight_bytes = nbytes(first[0]) + scale_bytes(first[1])
        sets = self.sets_for(weight_bytes)
        weights = [first] + [quantize() for _ in range(sets - 1)]
        xs = [self.heavy_tailed((max(TOKENS), in_f), 1.0, torch.bfloat16) for _ in range(sets)]

        # Guard against timing a wrong call: the product must match F.linear on the dequantized weight.
        with torch.inference_mode():
            packed, state = weights[0]
            w16 = bnb.functional.dequantize_4bit(packed, quant_state=state)
            for tokens in TOKENS:
                x = xs[0][:tokens]
                check_close(f"matmul_4bit {shape_name(shape)} t={tokens}",
                            bnb.matmul_4bit(x, packed.t(), quant_state=state), F.linear(x, w16), 5e-2)
            del w16

        for tokens in TOKENS:
            def call(s: int, tokens: int = tokens):
                packed, state = weights[s]
                return bnb.matmul_4bit(xs[s][:tokens], packed.t(), quant_state=state)

            us, mode = self.median_us(sets, call)
            path = gemm_4bit_path(tokens, out_f, in_f)
            op = f"bnb matmul_4bit nf4+dq bf16{f' [{path}]' if path else ''}"
            moved = weight_bytes + 2 * tokens * (in_f + out_f)
            self.emit(Row(self.tag(op, mode), shape_name(shape), tokens, us, refs[tokens] / us, "cuBLAS bf16",
                          refs[tokens], moved / us / 1e3))

    # ---- 3. LLM.int8 ----

    def llm_int8(self, bnb, threshold: float) -> None:
        out_f, in_f = INT8_SHAPE
        refs = self.cublas(torch.float16, INT8_SHAPE, INT8_TOKENS)

        def make_layer():
            # As Linear8bitLt is loaded for inference: an fp16 weight on the CPU, quantized by .cuda().
            w = self.heavy_tailed(INT8_SHAPE, 0.02, torch.float16)
            layer = bnb.nn.Linear8bitLt(in_f, out_f, bias=False, has_fp16_weights=False, threshold=threshold)
            layer.weight = bnb.nn.Int8Params(w.cpu(), requires_grad=False, has_fp16_weights=False)
            layer = layer.cuda().eval()
            return layer, w

        first, w0 = make_layer()
        weight_bytes = out_f * in_f + out_f * 4  # int8 codes + fp32 row scales (SCB)
        sets = self.sets_for(weight_bytes)
        layers = [first] + [make_layer()[0] for _ in range(sets - 1)]
        xs = [self.llm_int8_activations(max(INT8_TOKENS), in_f) for _ in range(sets)]

        # A first forward outside inference mode moves CB/SCB into the layer's state (init_8bit_state).
        # The check against fp16 F.linear is loose: it catches a wrong call (error ~1), not int8 rounding
        # (threshold 0 quantizes the 10x outlier columns too: ~0.1).
        with torch.no_grad():
            for layer, x in zip(layers, xs):
                layer(x[:16])
            x = xs[0][:16]
            check_close(f"LLM.int8 threshold {threshold:g}", layers[0](x), F.linear(x, w0), 0.25)
        del w0

        for tokens in INT8_TOKENS:
            counts = sorted({outlier_columns(bnb, x[:tokens], threshold) for x in xs}) if threshold > 0 else []
            note = ""
            if counts:
                note = f" ({counts[0]}{'' if len(counts) == 1 else f'-{counts[-1]}'} outlier cols)"

            def call(s: int, tokens: int = tokens):
                return layers[s](xs[s][:tokens])

            # With a threshold, bitsandbytes asks the host whether any outlier exists: no graph.
            us, mode = self.median_us(sets, call, capturable=threshold == 0)
            op = f"bnb LLM.int8 Linear8bitLt threshold {threshold:g}{note}"
            moved = weight_bytes + 2 * tokens * (in_f + out_f)
            self.emit(Row(self.tag(op, mode), shape_name(INT8_SHAPE), tokens, us, refs[tokens] / us, "cuBLAS fp16",
                          refs[tokens], moved / us / 1e3))


def scale_bytes(state) -> int:
    """Scales a 4-bit dequantize reads: fp32 absmax, or (double quant) 8-bit codes + nested absmax + offset."""
    if state.nested:
        return nbytes(state.absmax) + nbytes(state.state2.absmax) + nbytes(state.offset)
    return nbytes(state.absmax)


def dtype_name(dtype: torch.dtype) -> str:
    return {torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype]


def gemm_4bit_path(tokens: int, out_f: int, in_f: int) -> Optional[str]:
    """Which path bitsandbytes' CUDA gemm_4bit dispatch takes (its private heuristic; None if unknown)."""
    try:
        from bitsandbytes.backends.cuda import ops

        if tokens > ops._gemm_4bit_custom_max_m or in_f % BLOCKSIZE:
            return "dequant+F.linear"
        fused = ops._gemm_4bit_use_custom_fn(torch.cuda.current_device(), torch.bfloat16, tokens, out_f, in_f)
        return "fused" if fused else "dequant+F.linear"
    except Exception:
        return None


def outlier_columns(bnb, x: torch.Tensor, threshold: float) -> int:
    """Columns bitsandbytes' own int8_vectorwise_quant holds back as outliers at this threshold."""
    with torch.inference_mode():
        _, _, cols = bnb.functional.int8_vectorwise_quant(x, threshold=threshold)
    return 0 if cols is None else int(cols.numel())


def check_close(label: str, got: torch.Tensor, want: torch.Tensor, tol: float) -> None:
    err = ((got.float() - want.float()).norm() / want.float().norm().clamp_min(1e-30)).item()
    if not (err <= tol):  # also catches NaN
        print(f"    WARNING {label}: relative error {err:.3g} > {tol:g}", file=sys.stderr)


def format_row(r: Row) -> str:
    tokens = "-" if r.tokens is None else str(r.tokens)
    return (f"| {r.op} | {r.shape} | {tokens} | {r.us:.1f} | {r.gbps:.0f} | {r.reference} | {r.ref_us:.1f} "
            f"| {r.ratio:.2f} |")


def print_table(rows: list[Row]) -> None:
    print("| op | shape | tokens | µs | GB/s | reference | ref µs | ratio |")
    print("|---|---|---:|---:|---:|---|---:|---:|")
    for r in rows:
        print(format_row(r))


def describe(bench: Bench, bnb) -> list[str]:
    p = bench.props
    lines = [f"torch {torch.__version__} (CUDA {torch.version.cuda})"]
    if bnb is not None:
        lib = getattr(getattr(bnb, "cextension", None), "lib", None)
        lib_name = getattr(getattr(lib, "_lib", None), "_name", "?")
        lines.append(f"bitsandbytes {getattr(bnb, '__version__', '?')} from {bnb.__file__} (native library {lib_name})")
    lines.append(f"GPU: {p.name}, sm_{p.major}{p.minor}, {p.multi_processor_count} SMs, L2 {bench.l2_bytes >> 20} MB, "
                 f"{p.total_memory >> 30} GiB")
    timing = ("CUDA-graph replays (device time)" if bench.graph else "eager Python calls (includes host launch work)")
    lines.append(f"timing: {timing}, CUDA events around each, {WARMUP} warm-ups, median of {REPS}, "
                 f"sets rotated over > {bench.rotate_bytes / 1e6:.0f} MB")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--json", metavar="PATH", help="also write the rows to PATH as a JSON list")
    parser.add_argument("--graph", action="store_true", help="time CUDA-graph replays (device time) instead of eager calls")
    args = parser.parse_args()

    if not torch.cuda.is_available():
        print("needs a CUDA device", file=sys.stderr)
        return 1
    torch.manual_seed(0)
    bench = Bench(graph=args.graph)

    bnb = None
    try:
        import bitsandbytes as bnb
        import bitsandbytes.functional  # noqa: F401  (bnb.functional, bnb.nn used below)
        import bitsandbytes.nn  # noqa: F401
    except Exception as e:
        bnb = None
        bench.failures.append(f"import bitsandbytes: {type(e).__name__}: {e}")
        traceback.print_exc()

    header = describe(bench, bnb)
    for line in header:
        print(line, file=sys.stderr, flush=True)

    # Setup (weights, modules) runs outside inference mode; the timed calls inside it (median_us).
    with torch.no_grad():
        bench.attempt("copy reference, 256 MB", lambda: bench.copy_row(256 << 20))
        if bnb is not None:
            for shape in DEQUANT_SHAPES:
                for dq in (False, True):
                    bench.attempt(f"dequantize_4bit nf4{'+dq' if dq else ''} {shape_name(shape)}",
                                  lambda shape=shape, dq=dq: bench.dequantize(bnb, shape, dq))
            for shape in MATMUL_SHAPES:
                bench.attempt(f"matmul_4bit {shape_name(shape)}", lambda shape=shape: bench.matmul_4bit(bnb, shape))
            for threshold in (6.0, 0.0):
                bench.attempt(f"LLM.int8 threshold {threshold:g}", lambda t=threshold: bench.llm_int8(bnb, t))
        # 4. the cuBLAS references alone; those already measured beside bitsandbytes are not repeated.
        for dtype in (torch.bfloat16, torch.float16):
            for shape in MATMUL_SHAPES + (INT8_SHAPE,):
                bench.attempt(f"cuBLAS {dtype_name(dtype)} {shape_name(shape)}",
                              lambda dtype=dtype, shape=shape: bench.cublas(dtype, shape, TOKENS))

    print()
    for line in header:
        print(line)
    print()
    print_table(bench.rows)
    if bench.failures:
        print()
        print("Failed parts:")
        for f in bench.failures:
            print(f"- {f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump([row_json(r) for r in bench.rows], f, indent=1)
            f.write("\n")
    return 0 if not bench.failures else 2


def row_json(r: Row) -> dict:
    d = asdict(r)
    for key in ("us", "ratio", "ref_us", "gbps"):
        d[key] = round(d[key], 4)
    return d


if __name__ == "__main__":
    sys.exit(main())
