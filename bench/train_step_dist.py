#!/usr/bin/env python3
"""Distributed training steps, hmoe next to PyTorch's torch.distributed (gloo), in one run.

For each preset (tiny, small) and FFN (moe, hypermoe), one full training step (forward,
loss + router aux loss, backward, gradient exchange, global-norm clipping, AdamW) of a
batch of 16 sequences, in tokens/s:
  hmoe w1     `hmoe --threads 2 train`: one process, two threads
  hmoe w2 ep2 `mpirun -np 2 hmoe --threads 1 train ... dist.ep=2`: the experts split over the
              two ranks, tokens sent to their expert's rank; with --bind best both mpirun
              bindings (none, core) are measured and the faster kept (column "bind"); with
              `--mca mpi_yield_when_idle 1` (--no-yield: without): OpenMPI's blocking calls
              otherwise spin, which on a machine shared with other work takes the CPU from
              the rank being waited for (here, under load: about 0.5 of world 1 spinning,
              0.95 yielding); gloo does not spin
  torch dp2   2 processes, 1 thread each, data-parallel: every parameter replicated, the
              gradients summed with one all_reduce of a flat buffer they live in
  torch ep2   2 processes, 1 thread each, expert-parallel: each rank owns half of every
              layer's experts; per layer the per-expert counts are exchanged first, then the
              rows with all_to_all_single (and back; the backward swaps the splits); the
              replicated parameters' gradients summed with one all_reduce, the clipping norm
              completed with one more (the experts' shards)
  torch w1    one process, two threads (the reference), with OMP_WAIT_POLICY=PASSIVE unless
              set: libgomp's spinning threads, like OpenMPI's, starve on a shared machine
              (here, under load: 7 s a tiny step spinning, 0.45 s passive); hmoe's thread
              pool waits on condition variables
  GFLOP/step  the work of one step as hmoe's profiler counts it (2mnk per GEMM, the causal
              half of attention, ...), from one profiled step at world 1
  at peak     the tokens/s of a step doing that work at two cores' f32 FMA peak (bench_gemm's
              BM_fma_peak_avx512, times 2): no implementation of this model does better here
  peak/torch2 at peak over the faster PyTorch 2-process column: the ceiling of w2/torch2
The PyTorch model is bench/train_step_torch.py's (imported, its shapes set per preset):
noisy top-k router with the cv^2 aux loss, experts as index_select / addmm / index_add
over tokens sorted by expert (no per-expert nonzero), and HyperMoE with the exact
per-pattern adapter of /work/shared/spec/hypermoe.md section 6 (the selection MLP and
hypernetwork run once per distinct selected set, not per token as the reference does),
so PyTorch gets the same algorithmic savings hmoe has; its expert-parallel aux loss is
each rank's own (hmoe reduces the statistics over the world first: a few bytes). AdamW with foreach=True (torch
1.13 has no fused CPU AdamW); gradients live in preallocated flat buffers. Both sides
train on windows of the default corpus (/usr/share/games/fortunes, bytes, vocab 256).
tokens/s = global tokens per step / the median step time over --steps steps after
--warmup steps (hmoe's step times come from metrics.jsonl's tokens_per_s, which is
cumulative since the run's first step: step n ends at n * tokens / tokens_per_s).

usage: /usr/bin/python3 bench/train_step_dist.py [--hmoe build/tools/hmoe] [--presets tiny small]
           [--ffn moe hypermoe] [--steps 8] [--warmup 2] [--bind best|none|core] [--no-yield] [--rounds 1] [--no-torch]
           [--quick]
       (--quick: tiny only, 1 timed step, bind none: a smoke test; 77 s on the shared 2-core machine
       under load, 13 s with --no-torch: too long for ctest, so it is not there)
"""
import argparse
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import train_step_torch as tst  # noqa: E402  (the model's modules; shapes are its globals)

# The presets' shapes (models/train/config.cpp preset_values); N, E, ... as tst's.
PRESETS = {"tiny": dict(L=4, D=128, H=4, DFF=512, BLOCK=128, R=16),
           "small": dict(L=6, D=256, H=8, DFF=1024, BLOCK=256, R=32)}
BATCH, TOP_K = 16, 1
CORPUS = "/usr/share/games/fortunes"
EXPERT_PARAMS = ("w1", "b1", "w2", "b2")


def set_shapes(preset):
    for name, value in PRESETS[preset].items():
        setattr(tst, name, value)


class AllToAll(torch.autograd.Function):
    """all_to_all_single of rows; its backward is the same exchange with the splits swapped."""

    @staticmethod
    def forward(ctx, x, out_splits, in_splits):
        ctx.splits = out_splits, in_splits
        y = x.new_empty((sum(out_splits), x.shape[1]))
        dist.all_to_all_single(y, x, out_splits, in_splits)
        return y

    @staticmethod
    def backward(ctx, gy):
        out_splits, in_splits = ctx.splits
        gx = gy.new_empty((sum(in_splits), gy.shape[1]))
        dist.all_to_all_single(gx, gy.contiguous(), in_splits, out_splits)
        return gx, None, None


class SparseFfn(tst.MoE):
    """tst.MoE's router and experts, computed over tokens sorted by expert; with `hyper`,
    HyperMoE's adapter per distinct selection pattern; with world > 1, expert-parallel:
    this rank keeps experts [rank * N / world, (rank + 1) * N / world)."""

    def __init__(self, k, layer, hyper, rank=0, world=1):
        super().__init__(k)
        self.layer, self.rank, self.world = layer, rank, world
        self.hyper = [hyper] if hyper is not None else None  # shared, registered by the model
        if hyper is not None:
            self.expert_emb = nn.Parameter(torch.randn(tst.N, tst.E))
            self.sel1, self.sel2 = nn.Linear(tst.E, tst.SH), nn.Linear(tst.SH, tst.HIN)
        if world > 1:
            n = tst.N // world
            for name in EXPERT_PARAMS:
                setattr(self, name, nn.Parameter(getattr(self, name).data[rank * n:(rank + 1) * n].clone()))
        self.bits = torch.arange(tst.N)

    def grouped(self, xs, counts):
        """The local experts over rows grouped by expert (counts rows each)."""
        outs = []
        for e, chunk in enumerate(torch.split(xs, counts)):
            if counts[e]:
                h = F.gelu(torch.addmm(self.b1[e], chunk, self.w1[e]))
                outs.append(torch.addmm(self.b2[e], h, self.w2[e]))
        return torch.cat(outs) if outs else xs.new_zeros((0, xs.shape[1]))

    def exchange(self, xs, counts):
        """Rows sorted by global expert to their owners, through the local experts, and back."""
        w, n = self.world, tst.N // self.world
        recv = torch.empty_like(counts)
        dist.all_to_all_single(recv, counts)  # recv[s * n + e]: rows source s sends to local expert e
        rc = recv.tolist()
        in_splits = counts.view(w, n).sum(1).tolist()
        out_splits = [sum(rc[s * n:(s + 1) * n]) for s in range(w)]
        chunks = torch.split(AllToAll.apply(xs, out_splits, in_splits), rc)  # source-major
        xg = torch.cat([chunks[s * n + e] for e in range(n) for s in range(w)])  # expert-major
        yg = self.grouped(xg, [sum(rc[s * n + e] for s in range(w)) for e in range(n)])
        ychunks = torch.split(yg, [rc[s * n + e] for e in range(n) for s in range(w)])
        yr = torch.cat([ychunks[e * w + s] for s in range(w) for e in range(n)])
        return AllToAll.apply(yr, in_splits, out_splits)

    def adapter(self, x, idx, tok, counts):
        """HyperMoE's HyperExpert, its weights generated once per distinct selected set."""
        if self.k == 1:  # the pattern is the expert: the tokens are already grouped
            pats, order, cnt = counts.nonzero().squeeze(1), tok, counts[counts > 0].tolist()
            unselected = 1.0 - F.one_hot(pats, tst.N).to(x.dtype)
        else:
            pid = (1 << idx).sum(1)
            pats, inv = torch.unique(pid, return_inverse=True)
            order = torch.sort(inv, stable=True).indices
            cnt = torch.bincount(inv, minlength=pats.numel()).tolist()
            unselected = 1.0 - ((pats.unsqueeze(1) >> self.bits) & 1).to(x.dtype)
        s = self.sel2(F.relu(self.sel1(unselected @ self.expert_emb)))
        wd, bd, wu, bu = self.hyper[0](s, self.layer)
        outs = [torch.addmm(bu[p], F.relu(torch.addmm(bd[p], xc, wd[p])), wu[p])
                for p, xc in enumerate(torch.split(x.index_select(0, order), cnt))]
        return torch.zeros_like(x).index_add_(0, order, torch.cat(outs))

    def forward(self, x):
        g, idx, aux = self.route(x)
        flat = idx.reshape(-1)  # token t's slot j at t * k + j
        order = torch.sort(flat, stable=True).indices  # expert-major, token order kept
        tok = order // self.k if self.k > 1 else order
        counts = torch.bincount(flat, minlength=tst.N)
        xs = x.index_select(0, tok)
        ys = self.grouped(xs, counts.tolist()) if self.world == 1 else self.exchange(xs, counts)
        y = torch.zeros_like(x).index_add_(0, tok, ys * g.reshape(-1)[order].unsqueeze(1))
        if self.hyper is not None:
            y = y + self.adapter(x, idx, tok, counts)
        return y, aux


def build_model(ffn, rank, world):
    """tst.LM with SparseFfn layers; world > 1: expert-parallel over the world."""
    torch.manual_seed(0)  # every rank the same replicated parameters
    m = tst.LM("dense", TOP_K)
    m.hyper = tst.HyperNet() if ffn == "hypermoe" else None
    for layer, blk in enumerate(m.blocks):
        blk.ffn = SparseFfn(TOP_K, layer, m.hyper, rank, world)
    return m


def flat_grads(params):
    """One buffer holding every parameter's gradient (autograd accumulates into the views)."""
    buf = torch.zeros(sum(p.numel() for p in params))
    off = 0
    for p in params:
        p.grad = buf[off:off + p.numel()].view_as(p)
        off += p.numel()
    return buf


def corpus():
    data = bytearray()
    if os.path.isdir(CORPUS):
        for name in sorted(os.listdir(CORPUS)):
            path = os.path.join(CORPUS, name)
            if os.path.isfile(path) and not name.endswith((".dat", ".u8")):
                with open(path, "rb") as f:
                    data += f.read()
    if not data:  # no corpus: random bytes do as well for timing
        data = bytearray(torch.randint(0, 256, (1 << 20,), dtype=torch.uint8).numpy().tobytes())
    return torch.frombuffer(data, dtype=torch.uint8).long()


def torch_worker(rank, world, mode, preset, ffn, steps, warmup, threads, port, out):
    set_shapes(preset)
    torch.set_num_threads(threads)
    torch.set_flush_denormal(True)
    if world > 1:
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        dist.init_process_group("gloo", rank=rank, world_size=world)
    m = build_model(ffn, rank, world if mode == "ep" else 1)
    m.train()
    named = list(m.named_parameters())
    sharded = [p for n, p in named if mode == "ep" and n.split(".")[-1] in EXPERT_PARAMS]
    replicated = [p for n, p in named if not (mode == "ep" and n.split(".")[-1] in EXPERT_PARAMS)]
    rep_buf = flat_grads(replicated)
    shard_buf = flat_grads(sharded) if sharded else None
    bufs = [b for b in (rep_buf, shard_buf) if b is not None]
    opt = torch.optim.AdamW(replicated + sharded, lr=1e-3, betas=(0.9, 0.95), weight_decay=0.1, foreach=True)
    text = corpus()
    g = torch.Generator().manual_seed(1 + rank)
    local, block = BATCH // world, tst.BLOCK
    starts = torch.randint(0, text.numel() - block - 1, (warmup + steps, local), generator=g)
    batches = text[starts.unsqueeze(2) + torch.arange(block + 1)]  # steps x local x (block + 1)
    sq = torch.zeros(1)
    torch.manual_seed(100 + rank)  # the router noise

    def step(ids):
        logits, aux = m(ids[:, :-1])
        # Each rank's mean over its tokens / world: summed over ranks, the global batch's mean.
        loss = (F.cross_entropy(logits.reshape(-1, tst.V), ids[:, 1:].reshape(-1)) + aux) / world
        loss.backward()
        if world > 1:
            dist.all_reduce(rep_buf)
        total = rep_buf.dot(rep_buf)
        if shard_buf is not None:  # the clipping norm over every rank's expert shard
            torch.dot(shard_buf, shard_buf, out=sq[0])
            dist.all_reduce(sq)
            total = total + sq[0]
        coef = torch.clamp(1.0 / (total.sqrt() + 1e-6), max=1.0)
        for b in bufs:
            b.mul_(coef)
        opt.step()
        for b in bufs:
            b.zero_()

    times = []
    for i in range(warmup + steps):
        a = time.perf_counter()
        step(batches[i])
        times.append(time.perf_counter() - a)
    if rank == 0:
        with open(out, "w") as f:
            json.dump(times[warmup:], f)
    if world > 1:
        dist.destroy_process_group()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torch_tokens_per_s(mode, world, threads, preset, ffn, a, tmp):
    out = os.path.join(tmp, f"torch-{mode}{world}-{preset}-{ffn}.json")
    mp.spawn(torch_worker, args=(world, mode, preset, ffn, a.steps, a.warmup, threads, free_port(), out),
             nprocs=world, join=True)
    with open(out) as f:
        times = json.load(f)
    return BATCH * PRESETS[preset]["BLOCK"] / statistics.median(times)


def hmoe_train_cmd(a, threads, preset, ffn, steps, out_dir):
    """`hmoe train` of the benchmark's model and batch, no evaluation or checkpoints on the way."""
    return [a.hmoe, "--threads", str(threads), "train", "--overwrite", f"model.preset={preset}", f"model.ffn={ffn}",
            f"model.top_k={TOP_K}", f"train.batch_size={BATCH}", f"train.steps={steps}", "train.eval_every=0",
            "train.eval_batches=1", "train.checkpoint_every=0", f"train.out_dir={out_dir}"]


def hmoe_tokens_per_s(world, bind, preset, ffn, a, tmp):
    out_dir = os.path.join(tmp, f"hmoe-w{world}-{bind}-{preset}-{ffn}")
    cmd = hmoe_train_cmd(a, 2 // world, preset, ffn, a.warmup + a.steps, out_dir) + ["--quiet"]
    if world > 1:
        yield_idle = [] if a.no_yield else ["--mca", "mpi_yield_when_idle", "1"]
        cmd = ["mpirun", "-np", str(world), "--bind-to", bind, *yield_idle] + cmd + [f"dist.ep={world}"]
    env = dict(os.environ)
    if os.geteuid() == 0:  # OpenMPI refuses root without these
        env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if r.returncode:
        sys.exit(f"failed ({r.returncode}): {' '.join(cmd)}\n{r.stdout}{r.stderr}")
    tokens = BATCH * PRESETS[preset]["BLOCK"]
    with open(os.path.join(out_dir, "metrics.jsonl")) as f:
        lines = [json.loads(l) for l in f if '"tokens_per_s"' in l]
    ends = [0.0] + [l["step"] * tokens / l["tokens_per_s"] for l in lines]  # when each step ended
    times = [ends[i + 1] - ends[i] for i in range(a.warmup, len(lines))]
    return tokens / statistics.median(times)


def hmoe_gflop_per_step(preset, ffn, a, tmp):
    """The floating-point work of one hmoe training step, as its profiler counts it (2mnk per
    GEMM, the causal half of attention, ...): one profiled step of a world-1 run."""
    cmd = hmoe_train_cmd(a, 1, preset, ffn, 2, os.path.join(tmp, f"hmoe-work-{preset}-{ffn}")) + [
        "--profile", os.path.join(tmp, "work.json"), "--profile-steps", "1"]
    r = subprocess.run(cmd, capture_output=True, text=True)
    m = re.search(r"^work: ([0-9.]+) GFLOP", r.stdout + r.stderr, re.M)
    if r.returncode or not m:
        sys.exit(f"failed ({r.returncode}): {' '.join(cmd)}\n{r.stdout}{r.stderr}")
    return float(m.group(1))


def fma_peak_gflops(gemm_bench):
    """One core's f32 FMA peak (bench_gemm's BM_fma_peak_avx512: 12 independent zmm FMA chains);
    None where the bench or AVX-512 is missing."""
    if not os.path.exists(gemm_bench):
        return None
    r = subprocess.run([gemm_bench, "--benchmark_filter=^BM_fma_peak_avx512/", "--benchmark_format=json",
                        "--benchmark_min_time=0.3"], capture_output=True, text=True)
    runs = [b for b in json.loads(r.stdout or "{}").get("benchmarks", []) if "GFLOP/s" in b] if not r.returncode else []
    return max(b["GFLOP/s"] for b in runs) if runs else None


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--hmoe", default="build/tools/hmoe")
    ap.add_argument("--gemm-bench", default="build/bench/bench_gemm",
                    help="for the FMA peak of the columns 'at peak' and 'peak/torch2'")
    ap.add_argument("--presets", nargs="+", default=["tiny", "small"], choices=list(PRESETS))
    ap.add_argument("--ffn", nargs="+", default=["moe", "hypermoe"], choices=["moe", "hypermoe"])
    ap.add_argument("--steps", type=int, default=8, help="timed steps per configuration")
    ap.add_argument("--warmup", type=int, default=2, help="steps before them, not timed")
    ap.add_argument("--bind", default="best", choices=["best", "none", "core"],
                    help="mpirun --bind-to for hmoe w2; best: both, the faster kept")
    ap.add_argument("--no-yield", action="store_true", help="hmoe w2: let OpenMPI spin while it waits")
    ap.add_argument("--rounds", type=int, default=1,
                    help="measure every column this many times, back to back; medians (a shared machine drifts)")
    ap.add_argument("--no-torch", action="store_true", help="hmoe's columns only")
    ap.add_argument("--quick", action="store_true", help="a smoke test: tiny, 1 step after 1, --bind none")
    a = ap.parse_args()
    if a.quick:
        a.presets, a.steps, a.warmup, a.bind, a.rounds = ["tiny"], 1, 1, "none", 1
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # inherited by the spawned workers
    binds = ["none", "core"] if a.bind == "best" else [a.bind]
    core_peak = fma_peak_gflops(a.gemm_bench)
    print(f"torch {torch.__version__} (gloo), {os.cpu_count()} CPUs; batch {BATCH}, top-{TOP_K}, "
          f"{a.steps} timed steps after {a.warmup}; tokens/s (global tokens per step / median step time)"
          + (f"; medians of {a.rounds} rounds, ratios' range in brackets" if a.rounds > 1 else ""))
    if core_peak:
        print(f"FMA peak {core_peak:.1f} GFLOP/s per core ({a.gemm_bench}); 'at peak': hmoe's counted GFLOP per step "
              f"run at 2 cores' peak, tokens/s; 'peak/torch2': that over the faster PyTorch 2-process column, the "
              f"highest w2/torch2 any implementation doing this work could reach here")
    cols = ["hmoe w1", "hmoe w2 ep2", "bind", "torch dp2", "torch ep2", "torch w1", "w2/w1", "w2/torch2"]
    widths = [11] * 6 + [11 if a.rounds == 1 else 17] * 2  # the ratios' ranges widen the last two
    if core_peak:
        cols += ["GFLOP/step", "at peak", "peak/torch2"]
        widths += [11, 9, 12]
    print(f"{'preset':7s} {'ffn':9s}" + "".join(f" {c:>{w}s}" for c, w in zip(cols, widths)), flush=True)
    with tempfile.TemporaryDirectory(prefix="train_step_dist-") as tmp:
        for preset in a.presets:
            for ffn in a.ffn:
                rounds = [measure_row(preset, ffn, binds, a, tmp) for _ in range(a.rounds)]
                row = format_row(rounds)
                if core_peak:
                    gflop = hmoe_gflop_per_step(preset, ffn, a, tmp)
                    at_peak = BATCH * PRESETS[preset]["BLOCK"] / (gflop / (2 * core_peak))
                    row += [f"{gflop:.2f}", f"{at_peak:.0f}"]
                    if "torch dp2" in rounds[0]:
                        torch2 = statistics.median(max(r["torch dp2"], r["torch ep2"]) for r in rounds)
                        row.append(f"{at_peak / torch2:.2f}x")
                print(f"{preset:7s} {ffn:9s}" + "".join(f" {c:>{w}s}" for c, w in zip(row, widths)), flush=True)


def measure_row(preset, ffn, binds, a, tmp):
    """One round of a row: {column: tokens/s} and the binding hmoe w2 had."""
    r = {"hmoe w1": hmoe_tokens_per_s(1, "none", preset, ffn, a, tmp)}
    r["hmoe w2"], r["bind"] = max((hmoe_tokens_per_s(2, b, preset, ffn, a, tmp), b) for b in binds)
    if not a.no_torch:
        r["torch dp2"] = torch_tokens_per_s("dp", 2, 1, preset, ffn, a, tmp)
        r["torch ep2"] = torch_tokens_per_s("ep", 2, 1, preset, ffn, a, tmp)
        r["torch w1"] = torch_tokens_per_s("dp", 1, 2, preset, ffn, a, tmp)
    return r


def format_row(rounds):
    def med(key):
        return f"{statistics.median(r[key] for r in rounds):.0f}" if key in rounds[0] else "-"

    def ratio(f, suffix=""):
        v = [f(r) for r in rounds]
        spread = f" [{min(v):.2f}-{max(v):.2f}]" if len(v) > 1 else ""
        return f"{statistics.median(v):.2f}{suffix}{spread}"

    binds = sorted({r["bind"] for r in rounds})
    row = [med("hmoe w1"), med("hmoe w2"), "/".join(binds), med("torch dp2"), med("torch ep2"), med("torch w1"),
           ratio(lambda r: r["hmoe w2"] / r["hmoe w1"])]
    if "torch dp2" in rounds[0]:
        row.append(ratio(lambda r: r["hmoe w2"] / max(r["torch dp2"], r["torch ep2"]), "x"))
    return row

if __name__ == "__main__":
    main()
