#!/usr/bin/env bash
# README command 1: set up, build, train a tiny HyperMoE language model on the default
# corpus (Debian's fortunes), then sample from it. Extra arguments are config
# overrides, e.g. `bash tools/run_main.sh train.steps=100 data.text=my.txt`.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
bash "$root/tools/setup.sh"
HMOE_BUILD_TARGETS=hmoe_cli bash "$root/tools/build.sh" "$root/build" -DCMAKE_BUILD_TYPE=Release -DHMOE_GPU=emu
cd "$root"
out_dir=runs/tiny_hypermoe
# --overwrite: each run of this command starts the run afresh (--resume would continue it).
./build/tools/hmoe train --config tools/configs/tiny_hypermoe.toml train.out_dir=$out_dir --overwrite "$@"
echo "=== sample ==="
./build/tools/hmoe generate --checkpoint "$out_dir/checkpoint" --prompt "The " --max-tokens 300 --seed 7
