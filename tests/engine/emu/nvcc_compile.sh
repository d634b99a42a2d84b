#!/bin/sh
# Compiles tests/engine/emu/nvcc_sample.cu with nvcc for sm_80 and sm_90 (no GPU needed) and checks
# that its sm_80 PTX holds the ldmatrix and mma.sync forms engine/cuda/mma_ptx.h emits; exits 77
# (ctest SKIP) when nvcc is not installed. Usage: nvcc_compile.sh <repo root> <out dir> [nvcc]
root="$1"; out="$2"; nvcc="${3:-}"
[ -n "$nvcc" ] && [ -x "$nvcc" ] || nvcc="$(command -v nvcc || true)"
[ -z "$nvcc" ] && [ -x /usr/local/cuda/bin/nvcc ] && nvcc=/usr/local/cuda/bin/nvcc
if [ -z "$nvcc" ]; then echo "nvcc not found: skipping"; exit 77; fi
mkdir -p "$out" || exit 1
src="$root/tests/engine/emu/nvcc_sample.cu"
"$nvcc" -std=c++20 -gencode arch=compute_80,code=sm_80 -gencode arch=compute_90,code=sm_90 -I"$root" -c "$src" \
  -o "$out/nvcc_sample.o" || exit 1
"$nvcc" -std=c++20 -arch=sm_80 -I"$root" -ptx "$src" -o "$out/nvcc_sample.ptx" || exit 1
for insn in ldmatrix.sync.aligned.m8n8.x1.shared.b16 ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16 \
            ldmatrix.sync.aligned.m8n8.x4.shared.b16 ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 \
            mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 \
            cp.async.cg.shared.global; do
  grep -q "$insn" "$out/nvcc_sample.ptx" || { echo "nvcc_sample.ptx lacks $insn"; exit 1; }
done
