// The kernel contract of the optimizer family (ops/optim.cpp): kernel signatures, their
// dispatch stubs, and the per-element update rules every backend applies. Filled by
// CPU: ops/cpu/optim.cpp; CUDA: ops/cuda/optim.cu.
#pragma once

#include <cmath>
#include <cstdint>
#include <type_traits>

#include "engine/rng.h"  // HMOE_HD
#include "engine/tensor.h"
#include "ops/dispatch.h"
#include "ops/optim.h"

namespace hmoe {

// All tensors contiguous and on one device, numel equal, checked by the op. The
// step's constants are derived once on the host in f64: decay = 1 - lr * weight_decay,
// step_size = lr / (1 - beta1^t), rbc2 = 1 / sqrt(1 - beta2^t).
struct AdamWKernelArgs {
  double beta1, beta2, eps, decay, step_size, rbc2;
};
using AdamWKernel = void (*)(const AdamWKernelArgs& a, const Tensor& master, const Tensor& exp_avg,
                             const Tensor& exp_avg_sq, const Tensor& grad, const Tensor& param);
using SGDKernel = void (*)(const SGDStep& s, const Tensor& master, const Tensor& momentum_buf, const Tensor& grad,
                           const Tensor& param);
// out: 0-d f64. Chunks of kSumSquaresChunk elements are summed in f64, each in an order
// fixed by the backend, then the chunk sums in chunk order: the result depends on the
// size alone, never on the thread or block count.
using SumSquaresKernel = void (*)(const Tensor& x, const Tensor& out);
inline constexpr int64_t kSumSquaresChunk = 1 << 14;

// The per-element rules, shared by every backend so they compute the same arithmetic.
// S is the master dtype; g is already converted to S.
template <typename S>
HMOE_HD inline void adamw_element(S& x, S& m, S& v, S g, S b1, S b2, S eps, S decay, S step_size, S rbc2) {
  m = b1 * m + (S(1) - b1) * g;
  v = b2 * v + (S(1) - b2) * g * g;
  x = x * decay - step_size * m / (std::sqrt(v) * rbc2 + eps);
}

template <typename S>
HMOE_HD inline void sgd_element(S& x, S& buf, S g, S lr, S mu, S damp, S wd, bool nesterov, bool first) {
  g += wd * x;
  if (mu != S(0)) {
    buf = first ? g : mu * buf + (S(1) - damp) * g;
    g = nesterov ? g + mu * buf : buf;
  }
  x -= lr * g;
}

// fn.template operator()<S, G, P>() for master type S (f32 or f64: the op checked it),
// grad type G and copy type P (P = S when param is undefined), each picked by
// dispatch_float(dtype, op, f): a backend's float dispatcher (host or kernel-side types).
template <typename DispatchFloat, typename Fn>
void dispatch_update(const DispatchFloat& dispatch_float, const Tensor& master, const Tensor& grad, const Tensor& param,
                     const char* op, Fn&& fn) {
  dispatch_float(master.dtype(), op, [&]<typename S>() {
    if constexpr (std::is_same_v<S, float> || std::is_same_v<S, double>) {
      dispatch_float(grad.dtype(), op, [&]<typename G>() {
        if (!param.defined()) return fn.template operator()<S, G, S>();
        dispatch_float(param.dtype(), op, [&]<typename P>() { fn.template operator()<S, G, P>(); });
      });
    }
  });
}

HMOE_DECLARE_STUB(AdamWKernel, adamw_stub);
HMOE_DECLARE_STUB(SGDKernel, sgd_stub);
HMOE_DECLARE_STUB(SumSquaresKernel, sum_squares_stub);

}  // namespace hmoe
