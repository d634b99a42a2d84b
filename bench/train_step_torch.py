#!/usr/bin/env python3
"""One full training step (forward, loss + router aux loss, backward, clipping, AdamW)
of the tiny language model in PyTorch (Debian's python3-torch) next to hmoe's, in one
run on the same CPU and thread count. Same model and shapes as bench/bench_train_step.cpp:
4 layers, d 128, 4 heads, d_ff 512, block 128, batch 16, vocab 256, 8 experts (noisy
top-k router, cv^2 aux loss), HyperMoE with adapter rank 16. PyTorch's MoE loops over
experts; its HyperMoE generates every token's adapter weights, as the reference
implementation does. Prints tokens/s and hmoe / PyTorch speed-ups.

usage: /usr/bin/python3 bench/train_step_torch.py [build/bench/bench_train_step] [--threads 2]
"""
import argparse
import json
import math
import os
import subprocess
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

L, D, H, DFF, BLOCK, V, N, B = 4, 128, 4, 512, 128, 256, 8, 16
E, SH, HIN, HH, LE, R = 128, 128, 128, 128, 10, 16


class Attention(nn.Module):
    def __init__(self):
        super().__init__()
        self.qkv, self.proj = nn.Linear(D, 3 * D), nn.Linear(D, D)

    def forward(self, x):
        b, t, _ = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, H, D // H).permute(2, 0, 3, 1, 4)
        # torch 1.13 (Debian 12) has no fused attention: the usual masked-softmax form.
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(D // H))
        att = att.masked_fill(torch.ones(t, t, dtype=torch.bool).triu(1), float("-inf"))
        y = torch.softmax(att, -1) @ v
        return self.proj(y.transpose(1, 2).reshape(b, t, D))


class Dense(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc, self.proj = nn.Linear(D, DFF), nn.Linear(DFF, D)

    def forward(self, x):
        return self.proj(F.gelu(self.fc(x))), None


def cv2(v):
    return v.var(unbiased=False) / (v.mean() ** 2 + 1e-10)


class MoE(nn.Module):
    """Noisy top-k router and a loop over experts (baseline (a))."""

    def __init__(self, k):
        super().__init__()
        self.k = k
        self.router, self.noise = nn.Linear(D, N, bias=False), nn.Linear(D, N, bias=False)
        self.w1 = nn.Parameter(torch.randn(N, D, DFF) * 0.02)
        self.b1 = nn.Parameter(torch.zeros(N, DFF))
        self.w2 = nn.Parameter(torch.randn(N, DFF, D) * 0.02)
        self.b2 = nn.Parameter(torch.zeros(N, D))

    def route(self, x):
        logits = self.router(x)
        std = F.softplus(self.noise(x)) + 0.01
        logits = logits + torch.randn_like(logits) * std
        p = torch.softmax(logits, -1)
        g, idx = p.topk(self.k, -1)
        if self.k > 1:
            g = g / g.sum(-1, keepdim=True)
        dense = torch.zeros_like(p).scatter(1, idx, g)
        load = torch.zeros(N).index_add_(0, idx.flatten(), torch.ones(idx.numel()))
        return g, idx, 0.01 * (cv2(dense.sum(0)) + cv2(load))

    def experts(self, x, g, idx):
        y = torch.zeros_like(x)
        for e in range(N):
            tok, slot = (idx == e).nonzero(as_tuple=True)
            if tok.numel() == 0:
                continue
            h = F.gelu(x[tok] @ self.w1[e] + self.b1[e]) @ self.w2[e] + self.b2[e]
            y.index_add_(0, tok, h * g[tok, slot].unsqueeze(1))
        return y

    def forward(self, x):
        g, idx, aux = self.route(x)
        return self.experts(x, g, idx), aux


class HyperNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.layer_emb = nn.Parameter(torch.randn(L, LE))
        self.wh = nn.Linear(HIN + LE, HH)
        self.down, self.up = nn.Linear(HH, D * R), nn.Linear(HH, R * D)
        self.bdown, self.bup = nn.Linear(HH, R), nn.Linear(HH, D)

    def forward(self, s, layer):
        z = torch.cat([s, self.layer_emb[layer].expand(s.shape[0], LE)], 1)
        h = F.relu(self.wh(z))
        return self.down(h).view(-1, D, R), self.bdown(h), self.up(h).view(-1, R, D), self.bup(h)


class HyperMoE(MoE):
    """MoE + the HyperExpert with weights generated per token (baseline (b))."""

    def __init__(self, k, layer, hyper):
        super().__init__(k)
        self.layer, self.hyper = layer, [hyper]  # shared, registered by the model
        self.expert_emb = nn.Parameter(torch.randn(N, E))
        self.sel1, self.sel2 = nn.Linear(E, SH), nn.Linear(SH, HIN)

    def forward(self, x):
        g, idx, aux = self.route(x)
        y = self.experts(x, g, idx)
        unselected = torch.ones(x.shape[0], N).scatter(1, idx, 0.0)
        s = self.sel2(F.relu(self.sel1(unselected @ self.expert_emb)))
        wd, bd, wu, bu = self.hyper[0](s, self.layer)
        a = F.relu(torch.bmm(x.unsqueeze(1), wd).squeeze(1) + bd)
        return y + torch.bmm(a.unsqueeze(1), wu).squeeze(1) + bu, aux


class Block(nn.Module):
    def __init__(self, ffn):
        super().__init__()
        self.ln1, self.attn, self.ln2, self.ffn = nn.LayerNorm(D), Attention(), nn.LayerNorm(D), ffn

    def forward(self, x):
        x = x + self.attn(self.ln1(x))
        b, t, d = x.shape
        f, aux = self.ffn(self.ln2(x).reshape(b * t, d))
        return x + f.view(b, t, d), aux


class LM(nn.Module):
    def __init__(self, kind, k):
        super().__init__()
        self.wte, self.wpe = nn.Embedding(V, D), nn.Embedding(BLOCK, D)
        self.hyper = HyperNet() if kind == "hypermoe" else None
        make = {"dense": lambda l: Dense(), "moe": lambda l: MoE(k), "hypermoe": lambda l: HyperMoE(k, l, self.hyper)}
        self.blocks = nn.ModuleList(Block(make[kind](l)) for l in range(L))
        self.ln_f = nn.LayerNorm(D)

    def forward(self, ids):
        x = self.wte(ids) + self.wpe(torch.arange(ids.shape[1]))
        aux = 0.0
        for blk in self.blocks:
            x, a = blk(x)
            if a is not None:
                aux = aux + a
        return self.ln_f(x) @ self.wte.weight.t(), aux


def torch_step_tokens_per_s(kind, k, seconds):
    torch.manual_seed(0)
    m = LM(kind, k)
    opt = torch.optim.AdamW(m.parameters(), lr=1e-3, betas=(0.9, 0.95), weight_decay=0.1)

    def step():
        ids = torch.randint(0, V, (B, BLOCK + 1))
        logits, aux = m(ids[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, V), ids[:, 1:].reshape(-1)) + aux
        loss.backward()
        torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    step()
    times, start = [], time.perf_counter()
    while time.perf_counter() - start < seconds or len(times) < 3:
        a = time.perf_counter()
        step()
        times.append(time.perf_counter() - a)
    times.sort()
    params = sum(p.numel() for p in m.parameters())
    return B * BLOCK / times[len(times) // 2], params


def torch_mlp_samples_per_s(seconds):
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(256, 1024), nn.GELU(), nn.Linear(1024, 10))
    opt = torch.optim.AdamW(m.parameters())
    x, y = torch.randn(512, 256), torch.randint(0, 10, (512,))

    def step():
        F.cross_entropy(m(x), y).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    step()
    times, start = [], time.perf_counter()
    while time.perf_counter() - start < seconds or len(times) < 3:
        a = time.perf_counter()
        step()
        times.append(time.perf_counter() - a)
    times.sort()
    return 512 / times[len(times) // 2]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("bench", nargs="?", default="build/bench/bench_train_step")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=4.0)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    env_threads = {"HMOE_NUM_THREADS": str(a.threads)}
    out = subprocess.run([a.bench, "--benchmark_format=json", f"--benchmark_min_time={a.seconds}"],
                         check=True, capture_output=True, text=True, env={**os.environ, **env_threads}).stdout
    runs = json.loads(out)["benchmarks"]
    ours = {b["name"].split("/")[1]: b for b in runs if b["name"].startswith("BM_train_step/")}
    mlp = next(b for b in runs if b["name"].startswith("BM_mlp_step"))
    print(f"torch {torch.__version__}, {a.threads} thread(s); batch {B} x {BLOCK} tokens")
    tps = torch_mlp_samples_per_s(a.seconds)
    print(f"MLP 256-1024-10 AdamW step, batch 512: hmoe {mlp['samples/s']:.0f} samples/s, torch {tps:.0f}, "
          f"speed-up {mlp['samples/s'] / tps:.2f}x")
    # GFLOP/step: the FLOPs of hmoe's kernels in one profiled step (their cost models).
    print(f"{'model':14s} {'params':>9s} {'hmoe tok/s':>11s} {'torch tok/s':>12s} {'speed-up':>9s} "
          f"{'GFLOP/step':>10s} {'hmoe GFLOP/s':>12s}")
    for name, kind, k in [("dense", "dense", 1), ("moe_k1", "moe", 1), ("hypermoe_k1", "hypermoe", 1),
                          ("moe_k2", "moe", 2), ("hypermoe_k2", "hypermoe", 2)]:
        tps, params = torch_step_tokens_per_s(kind, k, a.seconds)
        o = ours[name]
        print(f"{name:14s} {params/1e6:8.2f}M {o['tokens/s']:11.0f} {tps:12.0f} {o['tokens/s']/tps:8.2f}x "
              f"{o['GFLOP']:10.2f} {o['GFLOP/s']:12.1f}   (hmoe params {o['params']/1e6:.2f}M)")


if __name__ == "__main__":
    sys.exit(main())
