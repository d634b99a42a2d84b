#!/bin/sh
# Compiles tests/engine/emu/nvcc_sample.cu with nvcc for sm_80 (no GPU needed); exits 77 (ctest
# SKIP) when nvcc is not installed. Usage: nvcc_compile.sh <repo root> <out dir> [nvcc]
root="$1"; out="$2"; nvcc="${3:-}"
[ -n "$nvcc" ] && [ -x "$nvcc" ] || nvcc="$(command -v nvcc || true)"
[ -z "$nvcc" ] && [ -x /usr/local/cuda/bin/nvcc ] && nvcc=/usr/local/cuda/bin/nvcc
if [ -z "$nvcc" ]; then echo "nvcc not found: skipping"; exit 77; fi
mkdir -p "$out" || exit 1
exec "$nvcc" -std=c++20 -arch=sm_80 -I"$root" -c "$root/tests/engine/emu/nvcc_sample.cu" -o "$out/nvcc_sample.o"
