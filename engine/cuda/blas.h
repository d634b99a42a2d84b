// The BLAS layer of the CUDA backend: cuBLAS in the real build, the CPU (OpenBLAS,
// half types through f32) under emulation. Same arguments in both; row-major.
#pragma once

#include <cstdint>

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

namespace detail {
// The argument checks both implementations share (engine/cuda/blas_common.cpp).
void check_gemm(const Gemm& g, const void* a, const void* b, const void* c);
}  // namespace detail

}  // namespace hmoe::cuda::blas
