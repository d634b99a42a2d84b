// The optimizer op family: fused in-place parameter updates (AdamW, SGD) and the sum of
// squares behind global-norm clipping, one kernel each per backend, so the optimizers
// of models/optim run unchanged on the CPU and the cuda device.
#pragma once

#include <cmath>
#include <cstdint>

#include "engine/rng.h"  // HMOE_HD
#include "engine/tensor.h"

namespace hmoe {

// One AdamW step (Loshchilov & Hutter, decoupled weight decay, bias-corrected moments).
struct AdamWStep {
  double lr = 1e-3, beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weight_decay = 0;
  int64_t step = 1;  // t >= 1, the step being taken
};

// In place: master, exp_avg, exp_avg_sq (contiguous, one float dtype S: f32 or f64, on one
// device) advance by one AdamW step from grad (contiguous, same numel, any float dtype,
// read as S). param, when defined, is a lower-precision copy (bf16/f16/f32) rewritten as
// master rounded to its dtype: fp32 master weights behind a bf16 model.
void adamw_update_(const Tensor& master, const Tensor& exp_avg, const Tensor& exp_avg_sq, const Tensor& grad,
                   const Tensor& param, const AdamWStep& s);

// One SGD step with momentum (PyTorch's rule); momentum_buf in master's dtype, used when
// momentum > 0 (first step: buf = g). Same master / param contract as adamw_update_.
struct SGDStep {
  double lr = 1e-2, momentum = 0, dampening = 0, weight_decay = 0;
  bool nesterov = false, first = true;
};
void sgd_update_(const Tensor& master, const Tensor& momentum_buf, const Tensor& grad, const Tensor& param,
                 const SGDStep& s);

// Sum of x's squared elements as a 0-d f64 tensor on x's device, accumulated in f64 in an
// order fixed by x's size alone (the same on 1 or N threads, on the CPU and the GPU).
Tensor sum_squares(const Tensor& x);

// --- kernel interfaces -----------------------------------------------------------------
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

}  // namespace hmoe
