/// @file
/// The optimizer op family: fused in-place parameter updates (AdamW, SGD) and the sum of
/// squares behind global-norm clipping, one kernel each per backend, so the optimizers
/// of models/optim run unchanged on the CPU and the cuda device.
#pragma once

#include <cstdint>

#include "engine/tensor.h"

namespace hmoe {

/// One AdamW step (Loshchilov & Hutter, decoupled weight decay, bias-corrected moments).
struct AdamWStep {
  /// @{
  /// Learning rate, moment decay rates, epsilon and decoupled weight decay.
  double lr = 1e-3, beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weight_decay = 0;
  /// @}
  int64_t step = 1;  ///< t >= 1, the step being taken
};

/// In place: master, exp_avg, exp_avg_sq (contiguous, one float dtype S: f32 or f64, on one
/// device) advance by one AdamW step from grad (contiguous, same numel, any float dtype,
/// read as S). param, when defined, is a lower-precision copy (bf16/f16/f32) rewritten as
/// master rounded to its dtype: fp32 master weights behind a bf16 model.
void adamw_update_(const Tensor& master, const Tensor& exp_avg, const Tensor& exp_avg_sq, const Tensor& grad,
                   const Tensor& param, const AdamWStep& s);

/// One SGD step with momentum (PyTorch's rule); momentum_buf in master's dtype, used when
/// momentum > 0 (first step: buf = g). Same master / param contract as adamw_update_.
struct SGDStep {
  /// @{
  /// Learning rate, momentum, dampening and weight decay (added to the gradient).
  double lr = 1e-2, momentum = 0, dampening = 0, weight_decay = 0;
  /// @}
  /// @{
  /// Nesterov momentum; whether this is the buffer's first step.
  bool nesterov = false, first = true;
  /// @}
};
/// One SGD step in place (see SGDStep).
void sgd_update_(const Tensor& master, const Tensor& momentum_buf, const Tensor& grad, const Tensor& param,
                 const SGDStep& s);

/// Sum of x's squared elements as a 0-d f64 tensor on x's device, accumulated in f64 in an
/// order fixed by x's size alone (the same on 1 or N threads, on the CPU and the GPU).
Tensor sum_squares(const Tensor& x);

}  // namespace hmoe
