// The BLAS layer of the CUDA backend: cuBLAS in the real build, the CPU (OpenBLAS,
// half types through f32) under emulation. Same arguments in both; row-major. Strided
// batched GEMM, and grouped GEMM (products of different sizes in one call).
#pragma once

#include <cstdint>
#include <vector>

#include "engine/cuda/runtime.h"
#include "engine/dtype.h"

namespace hmoe::cuda::blas {

// C[b] = alpha * op(A[b]) op(B[b]) + beta * C[b] for b in [0, batch): row-major
// matrices given by pointer, leading dimension and the element stride between batches.
// A, B and C share one dtype (f32, f64, bf16, f16); bf16/f16 accumulate in f32 and f32
// computes in full f32 (no TF32), so results meet the fp32 tolerance.
struct Gemm {
  DType dtype = DType::f32;
  bool trans_a = false, trans_b = false;
  int64_t m = 0, n = 0, k = 0;
  int64_t lda = 0, ldb = 0, ldc = 0;
  int64_t batch = 1;
  int64_t stride_a = 0, stride_b = 0, stride_c = 0;
  double alpha = 1.0, beta = 0.0;
};
// Throws hmoe::Error for an unsupported dtype or inconsistent sizes / leading dims.
void gemm(const Gemm& g, const void* a, const void* b, void* c, const Stream& s);

// One product of a grouped GEMM, C = alpha op(A) op(B) + beta C: row-major, its own
// sizes, leading dimensions and device pointers.
struct GemmProblem {
  int64_t m = 0, n = 0, k = 0;
  int64_t lda = 0, ldb = 0, ldc = 0;
  const void* a = nullptr;
  const void* b = nullptr;
  void* c = nullptr;
};
// Products of different sizes in one call (cublasGemmGroupedBatchedEx in the real build,
// one GEMM per product under emulation), sharing the dtype (f32, bf16 or f16: f32 in
// full f32, bf16/f16 with f32 accumulation, as gemm), the transposes, alpha and beta.
// A product with m = 0 or n = 0 is skipped; k = 0 sets C = beta C (zero for beta 0) as
// gemm does. Products run in no particular order: their C must not overlap.
struct GroupedGemm {
  DType dtype = DType::f32;
  bool trans_a = false, trans_b = false;
  double alpha = 1.0, beta = 0.0;
  std::vector<GemmProblem> problems;
};
// Throws hmoe::Error for an unsupported dtype or a product gemm would refuse.
void grouped_gemm(const GroupedGemm& g, const Stream& s);

namespace detail {
// The argument checks both implementations share (engine/cuda/blas_common.cpp).
void check_gemm(const Gemm& g, const void* a, const void* b, const void* c);
// One product of a grouped GEMM as a Gemm (batch 1).
Gemm problem_gemm(const GroupedGemm& g, const GemmProblem& p);
// The dtype and every product (check_gemm).
void check_grouped_gemm(const GroupedGemm& g);
}  // namespace detail

}  // namespace hmoe::cuda::blas
