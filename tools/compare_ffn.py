#!/usr/bin/env python3
"""The paper's comparison at small scale: dense vs MoE vs HyperMoE language models of
equal width and depth, same N and k, same data, steps and seeds. Trains each with the
`hmoe` CLI and prints validation LM loss (mean and spread over seeds), parameter
counts and tokens/s.

usage: python3 tools/compare_ffn.py [--hmoe build/tools/hmoe] [--seeds 1 2 3]
                                    [--steps 300] [extra section.key=value overrides]
"""
import argparse
import json
import os
import re
import statistics
import subprocess
import sys


def run(hmoe, config, ffn, seed, steps, out_root, extra):
    out_dir = os.path.join(out_root, f"{ffn}_seed{seed}")
    cmd = [hmoe, "train", "--quiet", "--overwrite", "--config", config,
           f"model.ffn={ffn}", f"train.seed={seed}", f"train.steps={steps}",
           f"train.eval_every={steps}", f"train.out_dir={out_dir}"] + extra
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{out.stderr}")
    m = re.search(r"last validation loss ([0-9.]+), ([0-9.]+) tokens/s, ([0-9]+) parameters", out.stdout)
    if not m:
        sys.exit(f"unexpected output of {' '.join(cmd)}:\n{out.stdout}")
    return float(m.group(1)), float(m.group(2)), int(m.group(3))


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser()
    ap.add_argument("--hmoe", default=os.path.join(here, "..", "build", "tools", "hmoe"))
    ap.add_argument("--config", default=os.path.join(here, "configs", "tiny_hypermoe.toml"))
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--out", default="runs/compare")
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()
    if len(args.seeds) < 3:
        print(f"note: {len(args.seeds)} seed(s): the spread is not meaningful below 3", file=sys.stderr)

    rows = []
    for ffn in ["dense", "moe", "hypermoe"]:
        losses, tps, params = [], [], 0
        for seed in args.seeds:
            loss, t, params = run(args.hmoe, args.config, ffn, seed, args.steps, args.out, args.overrides)
            losses.append(loss)
            tps.append(t)
            print(f"  {ffn:9s} seed {seed}: val loss {loss:.4f}, {t:.0f} tok/s", flush=True)
        rows.append((ffn, losses, params, statistics.mean(tps)))

    print()
    print(f"{'ffn':10s} {'val loss (mean)':>16s} {'spread (sd)':>12s} {'min':>8s} {'max':>8s} {'params':>10s} {'tok/s':>8s}")
    for ffn, losses, params, tps in rows:
        sd = statistics.stdev(losses) if len(losses) > 1 else 0.0
        print(f"{ffn:10s} {statistics.mean(losses):16.4f} {sd:12.4f} {min(losses):8.4f} {max(losses):8.4f} "
              f"{params:10d} {tps:8.0f}")
    print(json.dumps({ffn: {"val_loss": losses, "params": params, "tokens_per_s": tps}
                      for ffn, losses, params, tps in rows}))


if __name__ == "__main__":
    main()
