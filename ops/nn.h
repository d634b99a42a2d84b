/// @file
/// Neural-network ops, each fused and numerically stable: softmax, log_softmax,
/// cross_entropy, layer_norm, rms_norm, dropout, causal scaled-dot-product attention.
#pragma once

#include "engine/rng.h"
#include "engine/tensor.h"

namespace hmoe {

/// exp(x) / sum(exp(x)) along dim, computed stably.
Tensor softmax(const Tensor& x, int64_t dim = -1);
/// log(softmax(x)) along dim, computed stably.
Tensor log_softmax(const Tensor& x, int64_t dim = -1);

/// How a loss reduces its per-element values.
enum class Reduction : uint8_t { none, mean, sum };
/// logits [N, C] (or [C]), targets i32/i64 [N]; targets equal to ignore_index add
/// nothing; mean divides by the number of non-ignored targets. Statistics in f32+.
Tensor cross_entropy(const Tensor& logits, const Tensor& targets, int64_t ignore_index = -100,
                     Reduction reduction = Reduction::mean);

/// Normalises over the last weight.dim() dims; bias optional.
Tensor layer_norm(const Tensor& x, const Tensor& weight, const Tensor& bias = Tensor(), double eps = 1e-5);
/// x / sqrt(mean(x^2) + eps) * weight over the last weight.dim() dims.
Tensor rms_norm(const Tensor& x, const Tensor& weight, double eps = 1e-6);

/// Zeroes each element with probability p (mask from Philox, stream RngStream::dropout)
/// and scales the rest by 1/(1-p); identity when !training or p == 0.
Tensor dropout(const Tensor& x, double p, bool training, Generator& gen);

/// q, k, v: [B, H, T, Dh] -> [B, H, T, Dh], causal mask, scale 1/sqrt(Dh) by default.
Tensor causal_attention(const Tensor& q, const Tensor& k, const Tensor& v, double scale = 0.0);

}  // namespace hmoe
