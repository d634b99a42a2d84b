#!/usr/bin/env bash
# README command 1: set up, build, then run the main job.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
bash "$root/tools/setup.sh"
bash "$root/tools/build.sh" "$root/build" -DCMAKE_BUILD_TYPE=Release "$@"
"$root/build/tools/train_mlp"
