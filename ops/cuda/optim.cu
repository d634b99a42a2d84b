// The optimizer kernel family on the cuda device: fused AdamW / SGD element updates
// (fp32 or f64 master weights, any float gradient, an optional bf16/f16/f32 copy written
// in the same pass; V-wide accesses when aligned) and the chunked f64 sum of squares
// whose order depends on the size alone (one block per chunk, then one ordered block).
#include "engine/cuda/device_code.h"
#include "engine/cuda/launch.h"
#include "ops/cuda/kernel_utils.cuh"
#include "ops/cuda/strided.cuh"
#include "ops/dispatch.h"
#include "ops/optim.h"
#include "ops/optim_kernels.h"

namespace hmoe::ops::cuda {
namespace {

constexpr int kThreads = 256;

// Per element of a V-wide group: load, fn(x, state..., g) in S, store (and the copy).
// The first n / V groups go V at a time, the tail one element at a time.
template <int V, typename S, typename G, typename P, typename Fn>
__device__ __forceinline__ void update_loop(S* __restrict__ x, S* __restrict__ s0, S* __restrict__ s1,
                                            const G* __restrict__ g, P* __restrict__ p, int64_t n, Fn fn) {
  const int64_t step = int64_t(gridDim.x) * blockDim.x, tid = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t groups = n / V;
  for (int64_t q = tid; q < groups; q += step) {
    const int64_t i = q * V;
    Pack<S, V> xv = load_pack<S, V>(x + i), a = {}, b = {};
    if (s0) a = load_pack<S, V>(s0 + i);
    if (s1) b = load_pack<S, V>(s1 + i);
    const Pack<G, V> gv = load_pack<G, V>(g + i);
#pragma unroll
    for (int j = 0; j < V; ++j) fn(xv.v[j], a.v[j], b.v[j], S(to_compute<G>(gv.v[j])));
    store_pack<S, V>(x + i, xv);
    if (s0) store_pack<S, V>(s0 + i, a);
    if (s1) store_pack<S, V>(s1 + i, b);
    if (p) {
      Pack<P, V> pv;
#pragma unroll
      for (int j = 0; j < V; ++j) pv.v[j] = from_compute<P>(device_compute_t<P>(xv.v[j]));
      store_pack<P, V>(p + i, pv);
    }
  }
  for (int64_t i = groups * V + tid; i < n; i += step) {
    S a = s0 ? s0[i] : S(0), b = s1 ? s1[i] : S(0), xi = x[i];
    fn(xi, a, b, S(to_compute<G>(g[i])));
    x[i] = xi;
    if (s0) s0[i] = a;
    if (s1) s1[i] = b;
    if (p) p[i] = from_compute<P>(device_compute_t<P>(xi));
  }
}

template <int V, typename S, typename G, typename P>
__global__ void adamw_kernel(AdamWKernelArgs a, S* x, S* m, S* v, const G* g, P* p, int64_t n) {
  const S b1 = S(a.beta1), b2 = S(a.beta2), eps = S(a.eps), decay = S(a.decay), step = S(a.step_size), rbc2 = S(a.rbc2);
  update_loop<V>(x, m, v, g, p, n,
                 [=](S& xi, S& mi, S& vi, S gi) { adamw_element<S>(xi, mi, vi, gi, b1, b2, eps, decay, step, rbc2); });
}

template <int V, typename S, typename G, typename P>
__global__ void sgd_kernel(SGDStep s, S* x, S* buf, const G* g, P* p, int64_t n) {
  const S lr = S(s.lr), mu = S(s.momentum), damp = S(s.dampening), wd = S(s.weight_decay);
  const bool nesterov = s.nesterov, first = s.first;
  update_loop<V>(x, buf, static_cast<S*>(nullptr), g, p, n,
                 [=](S& xi, S& bi, S&, S gi) { sgd_element<S>(xi, bi, gi, lr, mu, damp, wd, nesterov, first); });
}

// The kernel-side float dispatcher, for dispatch_update (ops/optim_kernels.h).
constexpr auto kDispatchFloat = [](DType t, const char* op, auto&& f) { dispatch_device_float(t, op, f); };

// 4-wide when every pointer allows its pack (16 bytes for f32 state), else scalar.
template <typename S, typename G, typename P>
bool can_vectorize(std::initializer_list<const void*> s_ptrs, const G* g, const P* p) {
  for (const void* q : s_ptrs)
    if (q && !aligned_to(q, sizeof(S) * 4)) return false;
  return aligned_to(g, sizeof(G) * 4) && (!p || aligned_to(p, sizeof(P) * 4));
}

void adamw_cuda(const AdamWKernelArgs& a, const Tensor& master, const Tensor& exp_avg, const Tensor& exp_avg_sq,
                const Tensor& grad, const Tensor& param) {
  dispatch_update(kDispatchFloat, master, grad, param, "adamw_update_", [&]<typename S, typename G, typename P>() {
    S* x = static_cast<S*>(master.data_ptr<void>());
    S* m = static_cast<S*>(exp_avg.data_ptr<void>());
    S* v = static_cast<S*>(exp_avg_sq.data_ptr<void>());
    const G* g = static_cast<const G*>(grad.data_ptr<void>());
    P* p = param.defined() ? static_cast<P*>(param.data_ptr<void>()) : nullptr;
    const int64_t n = master.numel();
    const int device = master.device().index;
    const auto& stream = hmoe::cuda::current_stream(device);
    if (can_vectorize<S>({x, m, v}, g, p)) {
      auto k = &adamw_kernel<4, S, G, P>;
      HMOE_LAUNCH_CHECKED(k, flat_blocks(n / 4 + 1, device, kThreads), kThreads, 0, stream.native(), a, x, m, v, g, p,
                          n);
    } else {
      auto k = &adamw_kernel<1, S, G, P>;
      HMOE_LAUNCH_CHECKED(k, flat_blocks(n, device, kThreads), kThreads, 0, stream.native(), a, x, m, v, g, p, n);
    }
  });
}

void sgd_cuda(const SGDStep& s, const Tensor& master, const Tensor& momentum_buf, const Tensor& grad,
              const Tensor& param) {
  dispatch_update(kDispatchFloat, master, grad, param, "sgd_update_", [&]<typename S, typename G, typename P>() {
    S* x = static_cast<S*>(master.data_ptr<void>());
    S* buf = momentum_buf.defined() ? static_cast<S*>(momentum_buf.data_ptr<void>()) : nullptr;
    const G* g = static_cast<const G*>(grad.data_ptr<void>());
    P* p = param.defined() ? static_cast<P*>(param.data_ptr<void>()) : nullptr;
    const int64_t n = master.numel();
    const int device = master.device().index;
    const auto& stream = hmoe::cuda::current_stream(device);
    if (can_vectorize<S>({x, buf}, g, p)) {
      auto k = &sgd_kernel<4, S, G, P>;
      HMOE_LAUNCH_CHECKED(k, flat_blocks(n / 4 + 1, device, kThreads), kThreads, 0, stream.native(), s, x, buf, g, p,
                          n);
    } else {
      auto k = &sgd_kernel<1, S, G, P>;
      HMOE_LAUNCH_CHECKED(k, flat_blocks(n, device, kThreads), kThreads, 0, stream.native(), s, x, buf, g, p, n);
    }
  });
}

// Block c sums the squares of chunk c (kSumSquaresChunk elements) in f64: each thread
// its strided elements in index order, then the block's fixed tree.
template <typename T>
__global__ void sum_squares_chunks_kernel(const T* __restrict__ x, int64_t n, double* __restrict__ part) {
  const int64_t b = int64_t(blockIdx.x) * kSumSquaresChunk, e = min(n, b + kSumSquaresChunk);
  double acc = 0;
  for (int64_t i = b + threadIdx.x; i < e; i += blockDim.x) {
    const double y = double(to_compute<T>(x[i]));
    acc += y * y;
  }
  acc = block_reduce_to_first(acc, Plus{}, 0.0);
  if (threadIdx.x == 0) part[blockIdx.x] = acc;
}

// One block: the chunk sums in a fixed order (strided per thread, then the tree).
__global__ void sum_squares_total_kernel(const double* __restrict__ part, int64_t chunks, double* __restrict__ out) {
  double acc = 0;
  for (int64_t c = threadIdx.x; c < chunks; c += blockDim.x) acc += part[c];
  acc = block_reduce_to_first(acc, Plus{}, 0.0);
  if (threadIdx.x == 0) *out = acc;
}

void sum_squares_cuda(const Tensor& x, const Tensor& out) {
  const int64_t n = x.numel(), chunks = (n + kSumSquaresChunk - 1) / kSumSquaresChunk;
  const int device = x.device().index;
  const auto& stream = hmoe::cuda::current_stream(device);
  double* o = out.data_ptr<double>();
  if (n == 0) return hmoe::cuda::memset_async(o, 0, sizeof(double), stream);
  HMOE_CHECK(chunks < (int64_t(1) << 31), "sum_squares: ", x.meta_str(), " has too many elements for one launch");
  const Tensor part = Tensor::empty({chunks}, {DType::f64, x.device()});
  double* pp = part.data_ptr<double>();
  dispatch_device_float(x.dtype(), "sum_squares", [&]<typename T>() {
    auto k = &sum_squares_chunks_kernel<T>;
    HMOE_LAUNCH_CHECKED(k, unsigned(chunks), kThreads, 0, stream.native(), static_cast<const T*>(x.data_ptr<void>()), n,
                        pp);
  });
  auto total = &sum_squares_total_kernel;
  HMOE_LAUNCH_CHECKED(total, 1, kThreads, 0, stream.native(), pp, chunks, o);
}

}  // namespace

void register_optim_cuda() {
  adamw_stub.set(DeviceType::cuda, &adamw_cuda);
  sgd_stub.set(DeviceType::cuda, &sgd_cuda);
  sum_squares_stub.set(DeviceType::cuda, &sum_squares_cuda);
}

}  // namespace hmoe::ops::cuda
