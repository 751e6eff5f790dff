#!/usr/bin/env python3
"""Prints scripts/main-job.sh's table from lines "NAME|BPW BYTES|EVAL_JSON_PATH" on standard input."""
import json
import sys

print(f"{'format':<12} {'bpw':>6} {'size':>10} {'ppl':>9} {'KLD mean':>9} {'KLD p99':>8} {'top-1':>7}")
for line in sys.stdin:
    name, sizes, path = line.rstrip("\n").split("|")
    bpw, size = sizes.split()
    r = json.load(open(path))
    kld = r.get("kld")
    row = f"{name:<12} {float(bpw):6.3f} {int(size) / 2**20:6.1f} MiB {r['ppl']:9.4f} "
    row += f"{kld['mean']:9.5f} {kld['p99']:8.4f} {100 * r['top1']:6.2f}%" if kld else f"{'-':>9} {'-':>8} {'-':>7}"
    print(row)
