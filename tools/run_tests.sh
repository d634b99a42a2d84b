#!/usr/bin/env bash
# README command 2: set up, build, and run the whole test suite with ctest.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
bash "$root/tools/setup.sh"
bash "$root/tools/build.sh" "$root/build" -DCMAKE_BUILD_TYPE=Release -DHMOE_GPU=off "$@"
cd "$root/build"
ctest --output-on-failure -j "$(nproc)"
