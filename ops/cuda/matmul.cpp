// gemm on the cuda device: the GemmKernel interface mapped onto the backend's BLAS
// layer (cuBLAS in the real build, OpenBLAS under emulation), on the current stream.
#include "engine/cuda/blas.h"
#include "engine/cuda/runtime.h"
#include "ops/dispatch.h"
#include "ops/matmul.h"
#include "ops/matmul_kernels.h"

namespace hmoe::ops::cuda {
namespace {

void gemm_cuda(const GemmArgs& g, const Tensor& a, const Tensor& b, const Tensor& c) {
  HMOE_CHECK(a.dtype() == b.dtype() && a.dtype() == c.dtype(), "gemm: operands differ in dtype (", a.meta_str(), ", ",
             b.meta_str(), ", ", c.meta_str(), ")");
  hmoe::cuda::blas::Gemm bg;
  bg.dtype = c.dtype();
  bg.trans_a = g.trans_a;
  bg.trans_b = g.trans_b;
  bg.m = g.m;
  bg.n = g.n;
  bg.k = g.k;
  bg.lda = g.lda;
  bg.ldb = g.ldb;
  bg.ldc = g.ldc;
  bg.batch = g.batch;
  bg.stride_a = g.stride_a;
  bg.stride_b = g.stride_b;
  bg.stride_c = g.stride_c;
  bg.alpha = g.alpha;
  bg.beta = g.beta;
  const int device = c.device().index;
  hmoe::cuda::blas::gemm(bg, a.data_ptr<void>(), b.data_ptr<void>(), c.data_ptr<void>(),
                         hmoe::cuda::current_stream(device));
}

}  // namespace

void register_matmul_cuda() { gemm_stub.set(DeviceType::cuda, &gemm_cuda); }

}  // namespace hmoe::ops::cuda
