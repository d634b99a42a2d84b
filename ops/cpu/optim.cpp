// CPU kernels of the optimizer family: the fused AdamW / SGD element updates (parallel
// over elements) and the chunked f64 sum of squares.
#include "ops/optim.h"

#include <algorithm>
#include <type_traits>
#include <vector>

#include "engine/dtype.h"
#include "engine/thread_pool.h"
#include "ops/dispatch.h"
#include "ops/optim_kernels.h"

namespace hmoe::ops::cpu {
namespace {

constexpr int64_t kGrain = 1 << 14;

// The CPU's float dispatcher, for dispatch_update (ops/optim_kernels.h).
constexpr auto kDispatchFloat = [](DType t, const char* op, auto&& f) { detail::dispatch_float(t, op, f); };

void adamw_cpu(const AdamWKernelArgs& a, const Tensor& master, const Tensor& exp_avg, const Tensor& exp_avg_sq,
               const Tensor& grad, const Tensor& param) {
  dispatch_update(kDispatchFloat, master, grad, param, "adamw_update_", [&]<typename S, typename G, typename P>() {
    S* x = master.data_ptr<S>();
    S* m = exp_avg.data_ptr<S>();
    S* v = exp_avg_sq.data_ptr<S>();
    const G* g = grad.data_ptr<G>();
    P* p = param.defined() ? param.data_ptr<P>() : nullptr;
    const S b1 = S(a.beta1), b2 = S(a.beta2), eps = S(a.eps), decay = S(a.decay), step = S(a.step_size),
            rbc2 = S(a.rbc2);
    parallel_for(master.numel(), kGrain, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) {
        adamw_element<S>(x[i], m[i], v[i], S(compute_t<G>(g[i])), b1, b2, eps, decay, step, rbc2);
        if (p) p[i] = P(compute_t<P>(x[i]));
      }
    });
  });
}

void sgd_cpu(const SGDStep& s, const Tensor& master, const Tensor& momentum_buf, const Tensor& grad,
             const Tensor& param) {
  dispatch_update(kDispatchFloat, master, grad, param, "sgd_update_", [&]<typename S, typename G, typename P>() {
    S* x = master.data_ptr<S>();
    S* buf = momentum_buf.defined() ? momentum_buf.data_ptr<S>() : nullptr;
    const G* g = grad.data_ptr<G>();
    P* p = param.defined() ? param.data_ptr<P>() : nullptr;
    const S lr = S(s.lr), mu = S(s.momentum), damp = S(s.dampening), wd = S(s.weight_decay);
    parallel_for(master.numel(), kGrain, [&](int64_t b, int64_t e) {
      S unused = 0;
      for (int64_t i = b; i < e; ++i) {
        sgd_element<S>(x[i], buf ? buf[i] : unused, S(compute_t<G>(g[i])), lr, mu, damp, wd, s.nesterov, s.first);
        if (p) p[i] = P(compute_t<P>(x[i]));
      }
    });
  });
}

// Each chunk: 8 interleaved f64 accumulators (vectorisable), combined as a fixed tree.
void sum_squares_cpu(const Tensor& x, const Tensor& out) {
  const int64_t n = x.numel(), chunks = chunk_count(n, kSumSquaresChunk);
  std::vector<double> part(size_t(chunks), 0.0);
  detail::dispatch_float(x.dtype(), "sum_squares", [&]<typename T>() {
    const T* p = x.data_ptr<T>();
    parallel_for(chunks, 1, [&](int64_t cb, int64_t ce) {
      for (int64_t c = cb; c < ce; ++c) {
        const int64_t b = c * kSumSquaresChunk, e = std::min(n, b + kSumSquaresChunk);
        double acc[8] = {};
        int64_t i = b;
        for (; i + 8 <= e; i += 8)
          for (int j = 0; j < 8; ++j) {
            const double y = double(compute_t<T>(p[i + j]));
            acc[j] += y * y;
          }
        for (int j = 0; i < e; ++i, ++j) {
          const double y = double(compute_t<T>(p[i]));
          acc[j] += y * y;
        }
        part[size_t(c)] = ((acc[0] + acc[4]) + (acc[2] + acc[6])) + ((acc[1] + acc[5]) + (acc[3] + acc[7]));
      }
    });
  });
  double total = 0;
  for (double v : part) total += v;
  *out.data_ptr<double>() = total;
}

}  // namespace

void register_optim_cpu() {
  adamw_stub.set(DeviceType::cpu, &adamw_cpu);
  sgd_stub.set(DeviceType::cpu, &sgd_cpu);
  sum_squares_stub.set(DeviceType::cpu, &sum_squares_cpu);
}

}  // namespace hmoe::ops::cpu
