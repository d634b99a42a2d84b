// The kernel contracts of the softmax / cross-entropy (ops/softmax.cpp) and layer/RMS
// normalisation (ops/norm.cpp) families: kernel signatures and their dispatch stubs. All
// tensors are contiguous. Filled by CPU: ops/cpu/softmax.cpp, ops/cpu/norm.cpp; CUDA:
// ops/cuda/softmax.cu, ops/cuda/norm.cu.
#pragma once

#include <cstdint>

#include "engine/tensor.h"
#include "ops/dispatch.h"

namespace hmoe {

// x and y viewed as [outer, n, inner]; softmax (or log_softmax when `log`) along n.
// Statistics in f32 (f64 for f64 inputs).
using SoftmaxKernel = void (*)(const Tensor& x, const Tensor& y, int64_t outer, int64_t n, int64_t inner, bool log);
// From the forward output y and its gradient g: gx = y * (g - sum(g * y)) for softmax,
// gx = g - exp(y) * sum(g) for log_softmax; sums along n.
using SoftmaxBackwardKernel = void (*)(const Tensor& y, const Tensor& g, const Tensor& gx, int64_t outer, int64_t n,
                                       int64_t inner, bool log);

// logits [N, C], targets i32/i64 [N]. Writes loss[i] = lse[i] - logits[i, t_i] and the
// row logsumexp lse[i] (both in the stats dtype: f32, or f64 for f64 logits); rows whose
// target is ignore_index get 0 for both. Returns the number of non-ignored rows; throws
// hmoe::Error naming the first target outside [0, C).
using CrossEntropyKernel = int64_t (*)(const Tensor& logits, const Tensor& targets, int64_t ignore_index,
                                       const Tensor& loss, const Tensor& lse);
// gx[i, c] = (exp(logits[i, c] - lse[i]) - [c == t_i]) * g[i] * scale, with g of the
// stats dtype and numel N (or 1: one weight for every row); ignored rows get 0.
using CrossEntropyBackwardKernel = void (*)(const Tensor& logits, const Tensor& targets, int64_t ignore_index,
                                            const Tensor& lse, const Tensor& g, double scale, const Tensor& gx);

// x [M, D] (any leading shape flattened), weight [D], bias [D] or undefined. Writes
// y (x's dtype) and the per-row statistics mean (layer norm only; undefined for RMS)
// and rstd = 1 / sqrt(var + eps) (or 1 / sqrt(mean(x^2) + eps)), in the stats dtype.
using NormKernel = void (*)(const Tensor& x, const Tensor& weight, const Tensor& bias, double eps, bool rms,
                            const Tensor& y, const Tensor& mean, const Tensor& rstd);
// Gradients for the outputs that are defined (dx [M, D], dweight / dbias [D]). The
// reductions over rows use fixed row chunks summed in order: deterministic.
using NormBackwardKernel = void (*)(const Tensor& g, const Tensor& x, const Tensor& weight, const Tensor& mean,
                                    const Tensor& rstd, bool rms, const Tensor& dx, const Tensor& dweight,
                                    const Tensor& dbias);

HMOE_DECLARE_STUB(SoftmaxKernel, softmax_stub);
HMOE_DECLARE_STUB(SoftmaxBackwardKernel, softmax_backward_stub);
HMOE_DECLARE_STUB(CrossEntropyKernel, cross_entropy_stub);
HMOE_DECLARE_STUB(CrossEntropyBackwardKernel, cross_entropy_backward_stub);
HMOE_DECLARE_STUB(NormKernel, norm_stub);
HMOE_DECLARE_STUB(NormBackwardKernel, norm_backward_stub);

}  // namespace hmoe
