#!/usr/bin/env bash
# Whether a change leaves what training computes the same to the bit: runs the main job
# (tiny HyperMoE, 400 steps), short MoE / dense / bf16 / Switch runs and a few steps on the
# emulated cuda device, then prints each run's validation losses and the sha256 of every
# checkpoint file. Diff the output of two binaries (e.g. main's and a branch's):
#   bash tools/same_results.sh OLD/build/tools/hmoe /tmp/old > old.txt
#   bash tools/same_results.sh build/tools/hmoe /tmp/new > new.txt && diff old.txt new.txt
# An empty diff: the same losses and the same checkpoints (about 80 s on 2 cores).
# usage: tools/same_results.sh HMOE_BINARY SCRATCH_DIR (the directory is replaced)
set -euo pipefail
[ $# -eq 2 ] || { echo "usage: $0 HMOE_BINARY SCRATCH_DIR" >&2; exit 2; }
root="$(cd "$(dirname "$0")/.." && pwd)"
bin="$(realpath "$1")"
out="$2"
rm -rf "$out"
mkdir -p "$out"
cd "$out"
cfg=$root/tools/configs/tiny_hypermoe.toml
# A relative out_dir: checkpoints record it, so runs in different folders compare equal.
run() {
  local name=$1
  shift
  "$bin" train --config "$cfg" train.out_dir="$name" "$@" > "$name.log" 2>&1 || { cat "$name.log" >&2; exit 1; }
}
run main
run moe model.ffn=moe train.steps=60 train.eval_every=20 train.checkpoint_every=30
run dense model.ffn=dense train.steps=40 train.eval_every=20
run bf16 model.dtype=bf16 train.steps=20 train.eval_every=10
run switch model.ffn=moe model.router=switch model.capacity_factor=1.25 model.top_k=1 train.steps=20 train.eval_every=10
runs=(main moe dense bf16 switch)
# The emulated cuda device (an HMOE_GPU=emu build; it exists only when asked for).
if HMOE_EMULATE_CUDA=1 "$bin" selftest --quick --filter none > /dev/null 2>&1; then
  HMOE_EMULATE_CUDA=1 run cuda train.device=cuda train.steps=2 train.batch_size=2 train.eval_every=1 \
    train.eval_batches=1 model.block_size=32
  runs+=(cuda)
fi
for d in "${runs[@]}"; do
  echo "== $d"
  grep -oE "\"(val_loss|lm_loss)\": [^,}]*" "$d/metrics.jsonl" | tr '\n' ' '
  echo
  (cd "$d/checkpoint" && sha256sum -- *)
done
