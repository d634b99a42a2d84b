/// @file
/// The HyperExpert applied per selection pattern: y_t = ReLU(x_t W_down[p] + b_down[p])
/// W_up[p] + b_up[p] with p the token's pattern, computed on tokens grouped by pattern
/// with the grouped GEMM (gather fused into the first GEMM's A-load).
#pragma once

#include "engine/tensor.h"

namespace hmoe::moe {

/// x [T, d], token_pattern i32/i64 [T] in [0, P), w_down [P, d, r], b_down [P, r],
/// w_up [P, r, d], b_up [P, d] -> [T, d]. Gradients to x and every adapter tensor
/// (zero for patterns without tokens).
Tensor hyper_adapter(const Tensor& x, const Tensor& token_pattern, const Tensor& w_down, const Tensor& b_down,
                     const Tensor& w_up, const Tensor& b_up);

}  // namespace hmoe::moe
