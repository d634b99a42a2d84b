// hmoe's own packed f32 GEMM for the CPU (GotoBLAS/BLIS structure): operands packed
// into aligned panels, a register-blocked FMA micro-kernel (AVX-512, AVX2 or portable),
// the row gather of the MoE grouped GEMM fused into the A pack. Single-threaded; callers
// tile over the pool (ops/cpu/matmul.cpp, ops/moe/cpu/grouped_gemm.cpp).
#pragma once

#include <cstdint>

namespace hmoe::ops::cpu {

enum class GemmIsa { portable, avx2, avx512 };

// The best micro-kernel this CPU runs (AVX-512F > AVX2+FMA > portable), detected once.
GemmIsa gemm_best_isa();
bool gemm_isa_supported(GemmIsa isa);
const char* gemm_isa_name(GemmIsa isa);
// Whether callers should use sgemm rather than OpenBLAS: only with a vector kernel (the
// portable one is a correctness fallback, ~4 GFLOP/s, far below OpenBLAS's kernels for
// CPUs we have no micro-kernel for).
bool gemm_kernel_preferred();

// op(A), logically m x k. Element (i, p) is data[r * ld + col] with (r, col) = (i, p),
// or (p, i) when trans; when rows is given the stored row r is read from row rows[r]
// instead (-1: a row of zeros). That is the grouped GEMM's gather, done while packing.
// map, when given, is applied to every element as it is packed (A(i, p) is read as
// map(A(i, p))): an FFN's activation, so the activated matrix is never stored. It must
// send 0 to 0 (packing pads with zeros) and needs alpha = 1.
struct GemmA {
  const float* data = nullptr;
  int64_t ld = 0;
  bool trans = false;
  const int64_t* rows = nullptr;
  void (*map)(const float* in, float* out, int64_t n) = nullptr;  // out = map(in), elementwise; out may be in
};

// op(B), logically k x n: element (p, j) is data[p * ld + j], or data[j * ld + p] when trans.
struct GemmB {
  const float* data = nullptr;
  int64_t ld = 0;
  bool trans = false;
};

// Cache blocking (elements). Results do not depend on it (see sgemm), so it is tuned freely.
struct GemmBlocking {
  int64_t mc = 0, kc = 0, nc = 0;  // 0: the ISA's default
  // Skinny products (m <= MR, or n <= MR with alpha 1 and no gather) normally skip the
  // packing of the long operand; true forces the packed loop (tests, benchmarks).
  bool small_off = false;
};

// An elementwise step on each finished row segment of C before it is stored: fn(aux_row,
// acc, out, n) turns the n accumulated values acc into the stored ones (out may be acc),
// reading aux (m x n, leading dimension ld) at the same (i, j): an FFN's acc * act'(h). aux may be C itself
// (same ld): each element's aux is read before that element of C is written, so C can
// hold h on entry and the result on return. Needs beta = 0.
struct GemmEpilogue {
  void (*fn)(const float* aux, const float* acc, float* out, int64_t n) = nullptr;
  const float* aux = nullptr;
  int64_t ld = 0;
};

// C (m x n, row-major, leading dimension ldc) = alpha op(A) op(B) + beta C, on the
// calling thread. Every element is the same chain of fused multiply-adds whatever the
// ISA, blocking or the caller's tiling:
//   acc = beta == 0 ? 0 : beta * c;  for p in 0..k-1: acc = fma(alpha * A(i,p), B(p,j), acc)
// (C is not read when beta == 0), so any split of C into tiles run on any threads gives
// bit-identical results, on every machine. A map or an epilogue is applied to those same
// values (with an epilogue k runs as one block, so C is written once).
void sgemm(int64_t m, int64_t n, int64_t k, float alpha, const GemmA& a, const GemmB& b, float beta, float* c,
           int64_t ldc, GemmIsa isa = gemm_best_isa(), const GemmBlocking& blocking = {},
           const GemmEpilogue& epilogue = {});

}  // namespace hmoe::ops::cpu
