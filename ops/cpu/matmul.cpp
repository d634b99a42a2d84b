// CPU GEMM through OpenBLAS (cblas); bf16/f16 go through f32 buffers.
#include <cblas.h>

#include <vector>

#include "ops/cpu/loops.h"
#include "ops/dispatch.h"
#include "ops/matmul.h"

namespace hmoe {
HMOE_DECLARE_STUB(GemmKernel, gemm_stub);
}

namespace hmoe::ops::cpu {
namespace {

template <typename T>
void gemm_blas(const GemmArgs& g, const T* a, const T* b, T* c) {
  const auto ta = g.trans_a ? CblasTrans : CblasNoTrans, tb = g.trans_b ? CblasTrans : CblasNoTrans;
  for (int64_t i = 0; i < g.batch; ++i) {
    const T* ai = a + i * g.stride_a;
    const T* bi = b + i * g.stride_b;
    T* ci = c + i * g.stride_c;
    if (g.k == 0) {  // BLAS leaves C untouched when k = 0; the product is zero
      for (int64_t r = 0; r < g.m; ++r)
        for (int64_t col = 0; col < g.n; ++col) ci[r * g.ldc + col] = T(g.beta) * ci[r * g.ldc + col];
      continue;
    }
    if (g.m == 0 || g.n == 0) continue;
    if constexpr (std::is_same_v<T, float>) {
      cblas_sgemm(CblasRowMajor, ta, tb, int(g.m), int(g.n), int(g.k), float(g.alpha), ai, int(g.lda), bi, int(g.ldb),
                  float(g.beta), ci, int(g.ldc));
    } else {
      cblas_dgemm(CblasRowMajor, ta, tb, int(g.m), int(g.n), int(g.k), g.alpha, ai, int(g.lda), bi, int(g.ldb), g.beta,
                  ci, int(g.ldc));
    }
  }
}

void gemm_cpu(const GemmArgs& g, const Tensor& a, const Tensor& b, const Tensor& c) {
  if (c.numel() == 0) return;
  if (g.beta == 0 && g.k == 0) {
    std::fill_n(static_cast<char*>(c.data_ptr<void>()), c.nbytes(), 0);
    return;
  }
  switch (a.dtype()) {
    case DType::f32: return gemm_blas(g, a.data_ptr<float>(), b.data_ptr<float>(), c.data_ptr<float>());
    case DType::f64: return gemm_blas(g, a.data_ptr<double>(), b.data_ptr<double>(), c.data_ptr<double>());
    case DType::bf16:
    case DType::f16: {
      // Half inputs: one conversion to f32, the GEMM in f32, one rounding back.
      Tensor af = a.to(DType::f32), bf = b.to(DType::f32), cf = c.to(DType::f32);
      gemm_blas(g, af.data_ptr<float>(), bf.data_ptr<float>(), cf.data_ptr<float>());
      Tensor cc = c;
      cc.copy_(cf);
      return;
    }
    default: detail::unsupported_dtype("gemm", a.dtype());
  }
}

}  // namespace

void register_matmul_cpu() { gemm_stub.set(DeviceType::cpu, &gemm_cpu); }

}  // namespace hmoe::ops::cpu
