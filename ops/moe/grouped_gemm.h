// Grouped GEMM: Y_g = X_g W_g for row groups g given by offsets (m_g may be 0), with
// gradients to X and to each W_g (zero for empty groups).
#pragma once

#include "engine/tensor.h"

namespace hmoe::moe {

// x [M, K], w [G, K, N], offsets i64 [G + 1] (cpu, offsets[G] == M) -> [M, N].
Tensor grouped_gemm(const Tensor& x, const Tensor& w, const Tensor& offsets);

}  // namespace hmoe::moe
