// The CUDA BLAS layer under emulation: device memory is host memory, so the GEMM runs
// on the CPU with OpenBLAS (single-threaded calls, one batch entry per task, so the
// result never depends on the thread count); bf16/f16 go through f32 like cuBLAS. A
// grouped GEMM is one such GEMM per product.
#include <cblas.h>

#include <algorithm>
#include <mutex>
#include <vector>

#include "engine/cuda/blas.h"
#include "engine/error.h"
#include "engine/thread_pool.h"

namespace hmoe::cuda::blas {
namespace {

template <typename T>
void sgemm_like(bool ta, bool tb, int64_t m, int64_t n, int64_t k, double alpha, const T* a, int64_t lda, const T* b,
                int64_t ldb, double beta, T* c, int64_t ldc) {
  const auto ota = ta ? CblasTrans : CblasNoTrans, otb = tb ? CblasTrans : CblasNoTrans;
  if constexpr (std::is_same_v<T, float>)
    cblas_sgemm(CblasRowMajor, ota, otb, int(m), int(n), int(k), float(alpha), a, int(lda), b, int(ldb), float(beta),
                c, int(ldc));
  else
    cblas_dgemm(CblasRowMajor, ota, otb, int(m), int(n), int(k), alpha, a, int(lda), b, int(ldb), beta, c, int(ldc));
}

// C = beta C for k = 0 (BLAS skips it); beta 0 clears C, NaN included, as cuBLAS does.
template <typename T>
void scale_c(const Gemm& g, T* c) {
  for (int64_t i = 0; i < g.m; ++i)
    for (int64_t j = 0; j < g.n; ++j) {
      T& v = c[i * g.ldc + j];
      v = g.beta == 0 ? T(0) : T(g.beta) * v;
    }
}

template <typename T>
void gemm_one(const Gemm& g, const T* a, const T* b, T* c) {
  if (g.k == 0) return scale_c(g, c);
  sgemm_like<T>(g.trans_a, g.trans_b, g.m, g.n, g.k, g.alpha, a, g.lda, b, g.ldb, g.beta, c, g.ldc);
}

// A row-major rows x cols matrix with leading dimension ld, widened to a dense f32 one.
template <typename H>
std::vector<float> widen(const H* p, int64_t rows, int64_t cols, int64_t ld) {
  std::vector<float> out(static_cast<size_t>(rows * cols));
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t j = 0; j < cols; ++j) out[size_t(r * cols + j)] = float(p[r * ld + j]);
  return out;
}

template <typename H>
void gemm_half_one(const Gemm& g, const H* a, const H* b, H* c) {
  const int64_t ra = g.trans_a ? g.k : g.m, ca = g.trans_a ? g.m : g.k;
  const int64_t rb = g.trans_b ? g.n : g.k, cb = g.trans_b ? g.k : g.n;
  std::vector<float> cf = g.beta == 0 ? std::vector<float>(static_cast<size_t>(g.m * g.n)) : widen(c, g.m, g.n, g.ldc);
  if (g.k == 0) {
    for (float& v : cf) v = g.beta == 0 ? 0.0f : float(g.beta) * v;
  } else {
    const std::vector<float> af = widen(a, ra, ca, g.lda), bf = widen(b, rb, cb, g.ldb);
    sgemm_like<float>(g.trans_a, g.trans_b, g.m, g.n, g.k, g.alpha, af.data(), std::max<int64_t>(ca, 1), bf.data(),
                      std::max<int64_t>(cb, 1), g.beta, cf.data(), std::max<int64_t>(g.n, 1));
  }
  for (int64_t i = 0; i < g.m; ++i)
    for (int64_t j = 0; j < g.n; ++j) c[i * g.ldc + j] = H(cf[size_t(i * g.n + j)]);
}

template <typename T>
void gemm_batched(const Gemm& g, const void* a, const void* b, void* c) {
  const T* A = static_cast<const T*>(a);
  const T* B = static_cast<const T*>(b);
  T* C = static_cast<T*>(c);
  parallel_for(g.batch, 1, [&](int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; ++i) {
      const T* ai = A ? A + i * g.stride_a : nullptr;
      const T* bi = B ? B + i * g.stride_b : nullptr;
      if constexpr (std::is_same_v<T, bf16> || std::is_same_v<T, f16>)
        gemm_half_one<T>(g, ai, bi, C + i * g.stride_c);
      else
        gemm_one<T>(g, ai, bi, C + i * g.stride_c);
    }
  });
}

}  // namespace

void gemm(const Gemm& g, const void* a, const void* b, void* c, const Stream& s) {
  (void)s;  // streams are synchronous under emulation
  detail::check_gemm(g, a, b, c);
  if (g.batch == 0 || g.m == 0 || g.n == 0) return;
  HMOE_CHECK(pointer_device(c) >= 0 && (g.k == 0 || (pointer_device(a) >= 0 && pointer_device(b) >= 0)),
             "cuda gemm: A, B and C must be device memory");
  // OpenBLAS's own threads would make results depend on its thread count.
  static std::once_flag once;
  std::call_once(once, [] { openblas_set_num_threads(1); });
  switch (g.dtype) {
    case DType::f32: return gemm_batched<float>(g, a, b, c);
    case DType::f64: return gemm_batched<double>(g, a, b, c);
    case DType::bf16: return gemm_batched<bf16>(g, a, b, c);
    case DType::f16: return gemm_batched<f16>(g, a, b, c);
    default: HMOE_FAIL("cuda gemm: unsupported dtype ", dtype_name(g.dtype));
  }
}

void grouped_gemm(const GroupedGemm& g, const Stream& s) {
  detail::check_grouped_gemm(g);
  for (const GemmProblem& p : g.problems) gemm(detail::problem_gemm(g, p), p.a, p.b, p.c, s);
}

}  // namespace hmoe::cuda::blas
