#!/usr/bin/env bash
# README command 2: set up, build, and run the whole test suite with ctest. The CUDA
# backend is built against the SIMT emulator (HMOE_GPU=emu), so every cuda-device test
# runs here too, without a GPU.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
bash "$root/tools/setup.sh"
bash "$root/tools/build.sh" "$root/build" -DCMAKE_BUILD_TYPE=Release -DHMOE_GPU=emu "$@"
cd "$root/build"
ctest --output-on-failure -j "$(nproc)"
