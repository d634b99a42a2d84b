#!/usr/bin/env python3
"""Runs the same ops and shapes as bench/bench_compare.cpp in PyTorch (Debian's
python3-torch) on the same CPU and thread count, and prints ours / PyTorch's time.

usage: /usr/bin/python3 bench/compare_torch.py [path/to/bench_compare] [--threads N]
"""
import argparse
import json
import os
import subprocess
import sys
import time

import torch


def median_ms(fn, reps):
    fn()
    ts = []
    for _ in range(reps):
        a = time.perf_counter()
        fn()
        ts.append((time.perf_counter() - a) * 1e3)
    ts.sort()
    return ts[len(ts) // 2]


def torch_cases():
    g = torch.Generator().manual_seed(0)
    rn = lambda *s, grad=False: torch.randn(*s, generator=g).requires_grad_(grad)
    a, b, row = rn(4096, 1024), rn(4096, 1024), rn(1024)
    m1, m2 = rn(1024, 1024), rn(1024, 1024)
    x, w, bias = rn(4096, 512, grad=True), rn(2048, 512, grad=True), rn(2048, grad=True)
    lnw, lnb, ag = rn(1024, grad=True), rn(1024, grad=True), rn(4096, 1024, grad=True)
    logits = rn(2048, 4096, grad=True)
    targets = torch.arange(2048)
    emb = rn(32000, 256, grad=True)
    ids = torch.randint(0, 32000, (8192,), generator=g)
    q, k, v = (rn(4, 8, 256, 64, grad=True) for _ in range(3))
    F = torch.nn.functional

    def attn():
        s = q @ k.transpose(-1, -2) / 8.0
        mask = torch.ones(256, 256, dtype=torch.bool).triu(1)
        p = s.masked_fill(mask, float("-inf")).softmax(-1)
        (p @ v).sum().backward()

    return {
        "add_broadcast": (lambda: a + row, 20),
        "mul": (lambda: a * b, 20),
        "gelu": (lambda: F.gelu(a), 20),
        "exp": (lambda: a.exp(), 20),
        "sum_rows": (lambda: a.sum(1), 20),
        "sum_cols": (lambda: a.sum(0), 20),
        "softmax": (lambda: a.softmax(-1), 20),
        "log_softmax": (lambda: a.log_softmax(-1), 20),
        "layer_norm_fwd_bwd": (lambda: F.layer_norm(ag, (1024,), lnw, lnb).sum().backward(), 10),
        "rms_norm_fwd_bwd": (lambda: (ag * torch.rsqrt(ag.pow(2).mean(-1, keepdim=True) + 1e-6) * lnw).sum().backward(), 10),
        "cross_entropy_fwd_bwd": (lambda: F.cross_entropy(logits, targets).backward(), 10),
        "matmul_1024": (lambda: m1 @ m2, 10),
        "linear_fwd_bwd": (lambda: F.linear(x, w, bias).sum().backward(), 5),
        "embedding_fwd_bwd": (lambda: F.embedding(ids, emb).sum().backward(), 10),
        "attention_fwd_bwd": (attn, 5),
        "topk_8": (lambda: a.topk(8, -1), 10),
        "cat": (lambda: torch.cat([a, b], 1), 20),
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("binary", nargs="?", default="build/bench/bench_compare")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    env = dict(os.environ, HMOE_NUM_THREADS=str(args.threads))
    ours = {}
    out = subprocess.run([args.binary], capture_output=True, text=True, env=env, check=True).stdout
    for line in out.splitlines():
        r = json.loads(line)
        ours[r["op"]] = r["ms"]
    print(f"torch {torch.__version__}, {args.threads} thread(s)")
    print(f"{'op':24s} {'hmoe ms':>10s} {'torch ms':>10s} {'ratio':>7s}")
    worst = 0.0
    for name, (fn, reps) in torch_cases().items():
        with torch.no_grad() if "bwd" not in name else torch.enable_grad():
            t = median_ms(fn, reps)
        o = ours.get(name)
        if o is None:
            print(f"{name:24s} {'-':>10s} {t:10.3f}")
            continue
        ratio = o / t
        worst = max(worst, ratio)
        print(f"{name:24s} {o:10.3f} {t:10.3f} {ratio:7.2f}")
    print(f"worst ratio (hmoe / torch): {worst:.2f}  (target <= 1.25)")


if __name__ == "__main__":
    sys.exit(main())
