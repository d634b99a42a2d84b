#!/usr/bin/env python3
"""PyTorch baselines for the MoE / HyperMoE layer, at the shapes of bench/bench_moe.cpp
(T = 2048 tokens, d = 256, d_ff = 1024, N = 8 experts, adapter rank 32): (a) a plain MoE
that loops over experts, (b) HyperMoE computed as the reference implementation does,
with adapter weights generated per token. Prints forward+backward tokens/s and the
size of the per-token weight tensors, to compare with `build/bench/bench_moe`.

usage: /usr/bin/python3 bench/moe_torch_baselines.py [--threads 2]
"""
import argparse
import time

import torch
import torch.nn.functional as F

T, D, DFF, N, R, E, B, LE = 2048, 256, 1024, 8, 32, 128, 128, 10


def moe_loop(x, wr, w1, b1, w2, b2, k):
    p = torch.softmax(x @ wr, -1)
    g, idx = p.topk(k, -1)
    if k > 1:
        g = g / g.sum(-1, keepdim=True)
    y = torch.zeros_like(x)
    for e in range(N):
        tok, slot = (idx == e).nonzero(as_tuple=True)
        if tok.numel() == 0:
            continue
        h = F.gelu(x[tok] @ w1[e] + b1[e]) @ w2[e] + b2[e]
        y.index_add_(0, tok, h * g[tok, slot].unsqueeze(1))
    return y, idx


def hyper_per_token(x, idx, emb, s1, s2, lemb, wh, hd, hu, hbd, hbu):
    mask = torch.ones(x.shape[0], N).scatter_(1, idx, 0.0)  # unselected experts
    s = F.linear(F.relu(F.linear(mask @ emb, *s1)), *s2)
    z = torch.cat([s, lemb.expand(x.shape[0], -1)], 1)
    h = F.relu(F.linear(z, *wh))
    wd = F.linear(h, *hd).view(-1, D, R)  # per-token weights: T x d x r
    wu = F.linear(h, *hu).view(-1, R, D)
    bd, bu = F.linear(h, *hbd), F.linear(h, *hbu)
    a = F.relu(torch.bmm(x.unsqueeze(1), wd).squeeze(1) + bd)
    return torch.bmm(a.unsqueeze(1), wu).squeeze(1) + bu, wd.numel() + wu.numel()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    p = lambda *s, std=0.02: (torch.randn(*s) * std).requires_grad_(True)
    wr, w1, b1, w2, b2 = p(D, N), p(N, D, DFF), p(N, DFF), p(N, DFF, D), p(N, D)
    emb = p(N, E, std=1.0)
    lin = lambda i, o: (p(o, i), p(o))
    s1, s2, wh = lin(E, E), lin(E, E), lin(E + LE, B)
    hd, hu, hbd, hbu = lin(B, D * R), lin(B, R * D), lin(B, R), lin(B, D)
    lemb = p(1, LE, std=1.0)
    x = torch.randn(T, D, requires_grad=True)
    w = torch.randn(T, D)
    for k in (1, 2):
        for name in ("moe_loop", "hypermoe_per_token"):
            def step():
                y, idx = moe_loop(x, wr, w1, b1, w2, b2, k)
                extra = 0
                if name == "hypermoe_per_token":
                    he, extra = hyper_per_token(x, idx, emb, s1, s2, lemb, wh, hd, hu, hbd, hbu)
                    y = y + he
                (y * w).sum().backward()
                return extra
            step()
            ts = []
            for _ in range(args.reps):
                a = time.perf_counter()
                extra = step()
                ts.append(time.perf_counter() - a)
            ts.sort()
            med = ts[len(ts) // 2]
            mb = extra * 4 / 2**20
            print(f"{name:20s} k={k}: {T / med:8.0f} tokens/s fwd+bwd ({med * 1e3:.0f} ms)"
                  + (f", per-token adapter weights {mb:.0f} MiB" if extra else ""))


if __name__ == "__main__":
    main()
