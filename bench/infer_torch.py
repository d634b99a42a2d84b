#!/usr/bin/env python3
"""Inference at batch 1 in hmoe (build/bench/bench_infer) and in PyTorch (Debian's
python3-torch), side by side in one run on the same CPU and thread count: prefill
tokens/s, decode tokens/s with a key/value cache (32 steps after a prompt of context - 32)
and decode without one (the whole window through the model per token), at contexts 128
and 1024, for the tiny and small presets with block_size 1024. The PyTorch model is
bench/train_step_torch.py's (imported, its sizes set per preset), run in eval under
inference_mode with flush-denormal on; its cache is the usual preallocated tensor per
layer written at the new positions. Both routers run without noise, as in eval. In the
cached paths both generate each HyperMoE selection's adapter once and keep it (hmoe's
infer::Model does; here a dict per layer, tokens grouped by selection); the no-cache path
is the plain forward on both sides.

usage: /usr/bin/python3 bench/infer_torch.py [build/bench/bench_infer] [--threads 2]
         [--seconds 1] [--ffn hypermoe] [--preset tiny --preset small]
"""
import argparse
import json
import math
import os
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import train_step_torch as tm  # noqa: E402

PRESETS = {"tiny": dict(L=4, D=128, H=4, DFF=512, R=16), "small": dict(L=6, D=256, H=8, DFF=1024, R=32)}
BLOCK, DECODE_STEPS, K = 1024, 32, 1  # the presets route each token to one expert


def eval_route(self, x):
    """The router without noise (train_step_torch's adds it always)."""
    g, idx = torch.softmax(self.router(x), -1).topk(self.k, -1)
    if self.k > 1:
        g = g / g.sum(-1, keepdim=True)
    return g, idx, None


def build(preset, ffn):
    for name, v in {**PRESETS[preset], "BLOCK": BLOCK}.items():
        setattr(tm, name, v)
    tm.MoE.route = eval_route
    torch.manual_seed(0)
    return tm.LM(ffn, K).eval()


def hyper_cached(self, x):
    """HyperMoE forward with each selection's adapter generated once (per layer, kept in
    self.adapters) and applied to the tokens of that selection."""
    g, idx, _ = self.route(x)
    y = self.experts(x, g, idx)
    adapters = self.__dict__.setdefault("adapters", {})
    keys = [tuple(sorted(r)) for r in idx.tolist()]
    missing = sorted(set(keys) - adapters.keys())
    if missing:
        unselected = torch.ones(len(missing), tm.N)
        for i, key in enumerate(missing):
            unselected[i, list(key)] = 0.0
        s = self.sel2(F.relu(self.sel1(unselected @ self.expert_emb)))
        for key, *w in zip(missing, *self.hyper[0](s, self.layer)):
            adapters[key] = w
    if len(set(keys)) == 1:
        wd, bd, wu, bu = adapters[keys[0]]
        return y + F.relu(x @ wd + bd) @ wu + bu
    for key in set(keys):
        tok = torch.tensor([t for t, k in enumerate(keys) if k == key])
        wd, bd, wu, bu = adapters[key]
        y.index_add_(0, tok, F.relu(x[tok] @ wd + bd) @ wu + bu)
    return y


def forward_cached(m, ids, pos0, cache):
    """ids [1, t] at positions pos0.. into the cache; the last position's logits."""
    b, t = ids.shape
    D, H = tm.D, tm.H
    x = m.wte(ids) + m.wpe(torch.arange(pos0, pos0 + t))
    for blk, (kc, vc) in zip(m.blocks, cache):
        q, k, v = blk.attn.qkv(blk.ln1(x)).view(b, t, 3, H, D // H).permute(2, 0, 3, 1, 4)
        kc[:, :, pos0:pos0 + t], vc[:, :, pos0:pos0 + t] = k, v
        att = (q @ kc[:, :, :pos0 + t].transpose(-2, -1)) * (1.0 / math.sqrt(D // H))
        if t > 1:
            att = att.masked_fill(torch.ones(t, pos0 + t, dtype=torch.bool).triu(pos0 + 1), float("-inf"))
        y = torch.softmax(att, -1) @ vc[:, :, :pos0 + t]
        x = x + blk.attn.proj(y.transpose(1, 2).reshape(b, t, D))
        h = blk.ln2(x).reshape(b * t, D)
        f = hyper_cached(blk.ffn, h) if isinstance(blk.ffn, tm.HyperMoE) else blk.ffn(h)[0]
        x = x + f.view(b, t, D)
    return m.ln_f(x[:, -1]) @ m.wte.weight.t()


def prompt(n):
    return torch.tensor([[(i * 37 + 11) % 256 for i in range(n)]])


def timed(fn, seconds, setup=lambda: None):
    """Median seconds of fn() over repeats filling `seconds` (at least 3), setup untimed."""
    setup()
    fn()
    ts, start = [], time.perf_counter()
    while time.perf_counter() - start < seconds or len(ts) < 3:
        setup()
        a = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - a)
    return sorted(ts)[len(ts) // 2]


def torch_rates(m, ctx, seconds):
    hd = tm.D // tm.H
    cache = [(torch.zeros(1, tm.H, BLOCK, hd), torch.zeros(1, tm.H, BLOCK, hd)) for _ in m.blocks]
    full, short = prompt(ctx), prompt(ctx - DECODE_STEPS)

    def decode():
        for i in range(DECODE_STEPS):
            forward_cached(m, torch.tensor([[i % 256]]), ctx - DECODE_STEPS + i, cache)

    with torch.inference_mode():
        prefill = ctx / timed(lambda: forward_cached(m, full, 0, cache), seconds)
        dec = DECODE_STEPS / timed(decode, seconds, lambda: forward_cached(m, short, 0, cache))
        nocache = 1 / timed(lambda: m(full)[0][:, -1], seconds)
    return {"prefill": prefill, "decode": dec, "nocache": nocache}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("bench", nargs="?", default="build/bench/bench_infer")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=1.0)
    ap.add_argument("--ffn", action="append")
    ap.add_argument("--preset", action="append")
    a = ap.parse_args()
    ffns, presets = a.ffn or ["hypermoe"], a.preset or ["tiny", "small"]
    torch.set_num_threads(a.threads)
    torch.set_flush_denormal(True)
    filt = f"BM_infer/({'|'.join(presets)})/({'|'.join(ffns)})/"
    out = subprocess.run([a.bench, "--benchmark_format=json", f"--benchmark_filter={filt}",
                          f"--benchmark_min_time={a.seconds}"], check=True, capture_output=True, text=True,
                         env={**os.environ, "HMOE_NUM_THREADS": str(a.threads)}).stdout
    ours = {b["name"].removesuffix("/real_time"): b["tokens/s"] for b in json.loads(out)["benchmarks"]}
    print(f"torch {torch.__version__}, {a.threads} thread(s), batch 1, block_size {BLOCK}; tokens/s, "
          f"hmoe / torch in brackets")
    print(f"{'preset':7s} {'ffn':9s} {'context':>7s} | {'prefill hmoe':>12s} {'torch':>8s} {'':>7s} | "
          f"{'decode+cache hmoe':>17s} {'torch':>8s} {'':>7s} | {'decode no cache hmoe':>20s} {'torch':>8s} {'':>7s}")
    for preset in presets:
        for ffn in ffns:
            m = build(preset, ffn)
            for ctx in (128, 1024):
                t = torch_rates(m, ctx, a.seconds)
                cells = []
                for mode, width in (("prefill", 12), ("decode", 17), ("nocache", 20)):
                    h = ours[f"BM_infer/{preset}/{ffn}/{mode}/{ctx}"]
                    cells.append(f"{h:{width}.1f} {t[mode]:8.1f} ({h / t[mode]:4.2f}x)")
                print(f"{preset:7s} {ffn:9s} {ctx:7d} | " + " | ".join(cells))


if __name__ == "__main__":
    sys.exit(main())
