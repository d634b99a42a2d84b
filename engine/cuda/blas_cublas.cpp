// The CUDA BLAS layer on real GPUs: cublasGemmStridedBatchedEx with row-major
// operands through the transpose identity C^T = op(B)^T op(A)^T (column-major cuBLAS
// computes C^T, which is row-major C). f32 computes in full f32 (CUBLAS_COMPUTE_32F, no
// TF32), bf16/f16 accumulate in f32, f64 in f64. One cuBLAS handle per device and thread.
// Grouped GEMM: cublasGemmGroupedBatchedEx, each product a group of one.
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <array>
#include <memory>
#include <vector>

#include "engine/cuda/allocator.h"
#include "engine/cuda/blas.h"
#include "engine/cuda/runtime_backend.h"
#include "engine/error.h"

namespace hmoe::cuda::blas {
namespace {

const char* status_name(cublasStatus_t s) {
  switch (s) {
    case CUBLAS_STATUS_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_ALLOC_FAILED: return "CUBLAS_STATUS_ALLOC_FAILED";
    case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_ARCH_MISMATCH: return "CUBLAS_STATUS_ARCH_MISMATCH";
    case CUBLAS_STATUS_MAPPING_ERROR: return "CUBLAS_STATUS_MAPPING_ERROR";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "CUBLAS_STATUS_EXECUTION_FAILED";
    case CUBLAS_STATUS_INTERNAL_ERROR: return "CUBLAS_STATUS_INTERNAL_ERROR";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
    case CUBLAS_STATUS_LICENSE_ERROR: return "CUBLAS_STATUS_LICENSE_ERROR";
  }
  return "unknown cuBLAS status";
}

#define HMOE_CUBLAS_CHECK(call)                                                                                \
  do {                                                                                                         \
    const cublasStatus_t hmoe_s_ = (call);                                                                     \
    HMOE_CHECK(hmoe_s_ == CUBLAS_STATUS_SUCCESS, "cuda gemm: ", #call, " failed: ", status_name(hmoe_s_)); \
  } while (0)

// A cuBLAS handle of one device (RAII). Created with that device current.
class Handle {
 public:
  explicit Handle(int device) {
    int previous = 0;
    cudaGetDevice(&previous);
    cudaSetDevice(device);
    const cublasStatus_t s = cublasCreate(&h_);
    cudaSetDevice(previous);
    HMOE_CHECK(s == CUBLAS_STATUS_SUCCESS, "cuda gemm: cublasCreate on cuda:", device, " failed: ", status_name(s));
    // No reduced-precision split-K reductions for half outputs: one rounding at the end,
    // as the CPU backend does.
    HMOE_CUBLAS_CHECK(cublasSetMathMode(
        h_, cublasMath_t(CUBLAS_DEFAULT_MATH | CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION)));
  }
  ~Handle() {
    if (h_) cublasDestroy(h_);
  }
  Handle(const Handle&) = delete;
  Handle& operator=(const Handle&) = delete;
  cublasHandle_t get() const { return h_; }

 private:
  cublasHandle_t h_ = nullptr;
};

// cuBLAS handles are not thread-safe to share, so each OS thread has its own per device.
cublasHandle_t handle_for(int device) {
  thread_local std::array<std::unique_ptr<Handle>, backend::kMaxDevices> handles;
  auto& h = handles[size_t(device)];
  if (!h) h = std::make_unique<Handle>(device);
  return h->get();
}

cudaDataType data_type(DType t) {
  switch (t) {
    case DType::f32: return CUDA_R_32F;
    case DType::f64: return CUDA_R_64F;
    case DType::bf16: return CUDA_R_16BF;
    case DType::f16: return CUDA_R_16F;
    default: HMOE_FAIL("cuda gemm: unsupported dtype ", dtype_name(t));
  }
}

// Device memory from the device's caching allocator, allocated and freed in the order
// of stream s (RAII): the stream's later work alone may reuse it, after this call's.
class StreamBuffer {
 public:
  StreamBuffer(size_t nbytes, const Stream& s)
      : device_(s.device()), p_(caching_allocator(s.device()).allocate(nbytes, s.id())) {}
  ~StreamBuffer() { caching_allocator(device_).free(p_); }
  StreamBuffer(const StreamBuffer&) = delete;
  StreamBuffer& operator=(const StreamBuffer&) = delete;
  void* get() const { return p_; }

 private:
  int device_;
  void* p_;
};

}  // namespace

void gemm(const Gemm& g, const void* a, const void* b, void* c, const Stream& s) {
  detail::check_gemm(g, a, b, c);
  if (g.batch == 0 || g.m == 0 || g.n == 0) return;
  const int device = s.device();
  const size_t es = dtype_size(g.dtype);
  const auto stream = static_cast<cudaStream_t>(s.native());
  if (g.k == 0 && g.beta == 0) {
    // Nothing to multiply: C = 0 (cleared, not scaled, so a NaN in C does not survive).
    int previous = 0;
    cudaGetDevice(&previous);
    cudaSetDevice(device);
    cudaError_t e = cudaSuccess;
    for (int64_t i = 0; i < g.batch && e == cudaSuccess; ++i)
      e = cudaMemset2DAsync(static_cast<char*>(c) + size_t(i * g.stride_c) * es, size_t(g.ldc) * es, 0,
                            size_t(g.n) * es, size_t(g.m), stream);
    cudaSetDevice(previous);
    HMOE_CHECK(e == cudaSuccess, "cuda gemm: clearing C failed: ", cudaGetErrorString(e));
    return;
  }
  cublasHandle_t h = handle_for(device);
  HMOE_CUBLAS_CHECK(cublasSetStream(h, stream));
  const cudaDataType dt = data_type(g.dtype);
  const bool f64 = g.dtype == DType::f64;
  const double alpha64 = g.alpha, beta64 = g.beta;
  const float alpha32 = float(g.alpha), beta32 = float(g.beta);
  const void* alpha = f64 ? static_cast<const void*>(&alpha64) : static_cast<const void*>(&alpha32);
  const void* beta = f64 ? static_cast<const void*>(&beta64) : static_cast<const void*>(&beta32);
  // Row-major C (m x n) = op(A) op(B) is column-major C^T (n x m) = op(B)^T op(A)^T:
  // B comes first, and each row-major operand is its own transpose in column-major.
  const cublasOperation_t op_b = g.trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
  const cublasOperation_t op_a = g.trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
  int previous = 0;
  cudaGetDevice(&previous);
  cudaSetDevice(device);
  const cublasStatus_t st = cublasGemmStridedBatchedEx(
      h, op_b, op_a, int(g.n), int(g.m), int(g.k), alpha, b, dt, int(g.ldb), (long long)g.stride_b, a, dt, int(g.lda),
      (long long)g.stride_a, beta, c, dt, int(g.ldc), (long long)g.stride_c, int(g.batch),
      f64 ? CUBLAS_COMPUTE_64F : CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
  cudaSetDevice(previous);
  HMOE_CHECK(st == CUBLAS_STATUS_SUCCESS, "cuda gemm: cublasGemmStridedBatchedEx (", dtype_name(g.dtype), ", m=", g.m,
             " n=", g.n, " k=", g.k, " batch=", g.batch, ") failed: ", status_name(st));
}

void grouped_gemm(const GroupedGemm& g, const Stream& s) {
  detail::check_grouped_gemm(g);
  std::vector<const GemmProblem*> run;
  for (const GemmProblem& p : g.problems) {
    if (p.m == 0 || p.n == 0) continue;
    if (p.k == 0)
      gemm(detail::problem_gemm(g, p), p.a, p.b, p.c, s);  // C = beta C, as gemm does it
    else
      run.push_back(&p);
  }
  if (run.empty()) return;
  const size_t count = run.size();
  // Row-major through the transpose identity, as in gemm: cuBLAS's A is our B, its m our
  // n. Per-group arrays stay on the host; the pointer arrays must be device memory.
  const std::vector<cublasOperation_t> op_b(count, g.trans_b ? CUBLAS_OP_T : CUBLAS_OP_N),
      op_a(count, g.trans_a ? CUBLAS_OP_T : CUBLAS_OP_N);
  std::vector<int> m(count), n(count), k(count), ld_b(count), ld_a(count), ld_c(count);
  const std::vector<int> size(count, 1);
  const std::vector<float> alpha(count, float(g.alpha)), beta(count, float(g.beta));
  std::vector<void*> ptrs(3 * count);  // B, then A, then C of every product
  for (size_t i = 0; i < count; ++i) {
    const GemmProblem& p = *run[i];
    m[i] = int(p.n);
    n[i] = int(p.m);
    k[i] = int(p.k);
    ld_b[i] = int(p.ldb);
    ld_a[i] = int(p.lda);
    ld_c[i] = int(p.ldc);
    ptrs[i] = const_cast<void*>(p.b);
    ptrs[count + i] = const_cast<void*>(p.a);
    ptrs[2 * count + i] = p.c;
  }
  const StreamBuffer dev_ptrs(ptrs.size() * sizeof(void*), s);
  // From pageable memory: ptrs is consumed before memcpy_async returns.
  memcpy_async(dev_ptrs.get(), ptrs.data(), ptrs.size() * sizeof(void*), CopyKind::host_to_device, s);
  void** d = static_cast<void**>(dev_ptrs.get());
  const cudaDataType dt = data_type(g.dtype);
  const DeviceGuard guard(s.device());
  cublasHandle_t h = handle_for(s.device());
  HMOE_CUBLAS_CHECK(cublasSetStream(h, static_cast<cudaStream_t>(s.native())));
  const cublasStatus_t st = cublasGemmGroupedBatchedEx(
      h, op_b.data(), op_a.data(), m.data(), n.data(), k.data(), alpha.data(), d, dt, ld_b.data(), d + count, dt,
      ld_a.data(), beta.data(), d + 2 * count, dt, ld_c.data(), int(count), size.data(), CUBLAS_COMPUTE_32F);
  HMOE_CHECK(st == CUBLAS_STATUS_SUCCESS, "cuda grouped gemm: cublasGemmGroupedBatchedEx (", dtype_name(g.dtype), ", ",
             count, " products) failed: ", status_name(st));
}

}  // namespace hmoe::cuda::blas
