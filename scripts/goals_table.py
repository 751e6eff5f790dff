#!/usr/bin/env python3
"""Issue 16's goals as one markdown table, from the files scripts/device-goals.sh leaves in its output folder.

    python3 scripts/goals_table.py OUT_DIR

Each row is a goal's product, the range of its measured ratio over the issue's three shapes (and token counts
where a goal spans several), the target, and whether the lowest figure meets it. Ratios are lowbit_cuda_bench's:
the reference's time over lowbit's for products (> 1: lowbit faster), GB/s over the copy kernel's for codecs.
A product the files lack is listed as not measured. The bitsandbytes and runtime tables follow as they are.
"""
import pathlib
import re
import sys


def rows(path):
    """lowbit_cuda_bench's table rows: kernel, shape, tokens (None for codecs), us, GB/s, reference, ratio."""
    found = []
    if not path.exists():
        return found
    for line in path.read_text().splitlines():
        cells = [c.strip() for c in line.split("|")[1:-1]]
        if len(cells) != 9 or not re.fullmatch(r"[0-9.]+", cells[3]):
            continue
        found.append({"kernel": cells[0], "shape": cells[1], "tokens": None if cells[2] == "-" else int(cells[2]),
                      "us": float(cells[3]), "gbps": float(cells[4]), "reference": cells[5], "ratio": float(cells[8])})
    return found


def verdict(values, target):
    if not values:
        return "not measured", "–"
    low, high = min(values), max(values)
    measured = f"{low:.2f}" if abs(high - low) < 0.005 else f"{low:.2f}–{high:.2f}"
    return measured, "met" if low >= target else f"missed by {target - low:.2f}"


def main():
    out = pathlib.Path(sys.argv[1])
    four_bit = rows(out / "bench-4bit.md")
    decode = rows(out / "bench-decode.md")
    codecs = rows(out / "bench-codecs.md")
    int8 = rows(out / "bench-int8.md")
    table = []

    def add(goal, product, values, target, unit="× cuBLAS bf16"):
        measured, met = verdict(values, target)
        table.append(f"| {goal} | {product} | {measured} | ≥ {target} {unit} | {met} |")

    def products(kernel, tokens):
        return [r["ratio"] for r in four_bit if r["kernel"] == kernel and r["tokens"] in tokens]

    for kernel, name in (("matmul nf4+dq bf16", "nf4 + double quant"), ("matmul q4_K bf16", "q4_K")):
        add("1", f"{name}, 1–8 tokens", products(kernel, {1, 2, 4, 8}), 3.0)
    # Decoding's products: each type's weight read beside the copy kernel at the same bytes, 1-8 tokens.
    by_type = {}
    for r in decode:
        m = re.fullmatch(r"(?:matvec (\S+) f32|fused (q4_K) f32 out), (\d+) tok", r["kernel"])
        if m and r["reference"].startswith("copy"):
            name = f"fused {m.group(2)}" if m.group(2) else f"matvec {m.group(1)}"
            by_type.setdefault(name, []).append(r["ratio"])
    for name, values in by_type.items():
        add("1", f"{name}, 1–8 tokens: the weight read", values, 0.75, "of copy")
    for tokens, target in ((16, 2.5), (32, 2.0), (64, 1.4), (128, 0.95), (256, 0.95), (512, 0.95)):
        for kernel, name in (("matmul nf4+dq bf16", "nf4 + double quant"), ("matmul q4_K bf16", "q4_K")):
            add("2", f"{name}, {tokens} tokens", products(kernel, {tokens}), target)
    for r_type in ("q2_K", "q3_K", "q4_K", "q5_K", "q6_K"):
        add("3", f"dequantize {r_type}", [r["ratio"] for r in codecs if r["kernel"] == f"dequant {r_type} -> bf16"], 0.9, "of copy")
    for kind, target in (("nf4", 0.6), ("fp4", 0.6), ("nf4+dq", 0.5), ("fp4+dq", 0.5)):
        add("3", f"quantize {kind}", [r["ratio"] for r in codecs if r["kernel"] == f"quant bf16 -> {kind}"], target, "of copy")
    add("4", "LLM.int8 threshold 6, 512 tokens",
        [r["ratio"] for r in int8 if r["kernel"] == "LLM.int8 threshold 6" and r["tokens"] == 512], 1.0, "× cuBLAS f16")

    device = next((line for path in sorted(out.glob("bench-*.md")) for line in path.read_text().splitlines()
                   if line.startswith("device:")), "device: ?")
    print(f"{device}\n")
    print("| goal | product | measured (over the shapes and token counts) | target | |\n|---|---|--:|---|---|")
    print("\n".join(table))
    between = rows(out / "bench-4bit-between.md")
    if between:  # past kWideDequantizeTokens the library dequantizes and calls cuBLAS: "matmul" rows
        print("\nBetween 256 and 512 tokens, µs: the wide kernel (wgmma) against dequantize + cuBLAS (matmul):\n")
        print("| product | shape | tokens | wgmma | dequantize + cuBLAS | cuBLAS bf16 |\n|---|---|--:|--:|--:|--:|")
        for r in between:
            if not r["kernel"].startswith("wgmma"):
                continue
            library = next(x for x in between if x["kernel"] == r["kernel"].replace("wgmma", "matmul") and
                           (x["shape"], x["tokens"]) == (r["shape"], r["tokens"]))
            cublas = next(x for x in between if x["kernel"] == "cuBLAS bf16" and (x["shape"], x["tokens"]) == (r["shape"], r["tokens"]))
            print(f"| {r['kernel'][6:]} | {r['shape']} | {r['tokens']} | {r['us']:.1f} | {library['us']:.1f} | {cublas['us']:.1f} |")
    for name, title in (("bnb.md", "bitsandbytes in the same call"), ("runtime.md", "Goal 5: the GPU runtime before and after")):
        path = out / name
        print(f"\n{title}:\n")
        print(path.read_text().strip() if path.exists() else "not measured")


if __name__ == "__main__":
    main()
