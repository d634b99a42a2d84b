// Argument checks of the CUDA BLAS layer, shared by cuBLAS and the emulated version.
#include <climits>

#include "engine/cuda/blas.h"
#include "engine/error.h"

namespace hmoe::cuda::blas::detail {

void check_gemm(const Gemm& g, const void* a, const void* b, const void* c) {
  HMOE_CHECK(g.dtype == DType::f32 || g.dtype == DType::f64 || g.dtype == DType::bf16 || g.dtype == DType::f16,
             "cuda gemm: unsupported dtype ", dtype_name(g.dtype), " (f32, f64, bf16 or f16)");
  HMOE_CHECK(g.m >= 0 && g.n >= 0 && g.k >= 0 && g.batch >= 0, "cuda gemm: negative size m=", g.m, " n=", g.n,
             " k=", g.k, " batch=", g.batch);
  // cuBLAS takes int sizes and leading dimensions.
  HMOE_CHECK(g.m <= INT_MAX && g.n <= INT_MAX && g.k <= INT_MAX && g.batch <= INT_MAX && g.lda <= INT_MAX &&
                 g.ldb <= INT_MAX && g.ldc <= INT_MAX,
             "cuda gemm: sizes or leading dimensions beyond 2^31-1 (m=", g.m, " n=", g.n, " k=", g.k, ")");
  const int64_t a_cols = g.trans_a ? g.m : g.k, b_cols = g.trans_b ? g.k : g.n;
  HMOE_CHECK(g.lda >= std::max<int64_t>(1, a_cols), "cuda gemm: lda=", g.lda, " is less than the ", a_cols,
             " columns of the row-major A", g.trans_a ? " (transposed)" : "");
  HMOE_CHECK(g.ldb >= std::max<int64_t>(1, b_cols), "cuda gemm: ldb=", g.ldb, " is less than the ", b_cols,
             " columns of the row-major B", g.trans_b ? " (transposed)" : "");
  HMOE_CHECK(g.ldc >= std::max<int64_t>(1, g.n), "cuda gemm: ldc=", g.ldc, " is less than n=", g.n);
  HMOE_CHECK(g.stride_a >= 0 && g.stride_b >= 0 && g.stride_c >= 0, "cuda gemm: negative batch stride");
  const bool empty = g.batch == 0 || g.m == 0 || g.n == 0;
  HMOE_CHECK(empty || c != nullptr, "cuda gemm: null C");
  HMOE_CHECK(empty || g.k == 0 || (a != nullptr && b != nullptr), "cuda gemm: null A or B");
}

Gemm problem_gemm(const GroupedGemm& g, const GemmProblem& p) {
  return {.dtype = g.dtype,
          .trans_a = g.trans_a,
          .trans_b = g.trans_b,
          .m = p.m,
          .n = p.n,
          .k = p.k,
          .lda = p.lda,
          .ldb = p.ldb,
          .ldc = p.ldc,
          .alpha = g.alpha,
          .beta = g.beta};
}

void check_grouped_gemm(const GroupedGemm& g) {
  // cublasGemmGroupedBatchedEx's types with CUBLAS_COMPUTE_32F.
  HMOE_CHECK(g.dtype == DType::f32 || g.dtype == DType::bf16 || g.dtype == DType::f16,
             "cuda grouped gemm: unsupported dtype ", dtype_name(g.dtype), " (f32, bf16 or f16)");
  HMOE_CHECK(g.problems.size() <= size_t(INT_MAX), "cuda grouped gemm: ", g.problems.size(),
             " products, more than 2^31-1");
  for (const GemmProblem& p : g.problems) check_gemm(problem_gemm(g, p), p.a, p.b, p.c);
}

}  // namespace hmoe::cuda::blas::detail
