/// @file
/// The grouped FFN: two grouped GEMMs with an activation between them, as one op whose
/// backward keeps only the pre-activation. The experts of an MoE layer and the HyperMoE
/// adapters (one per selection pattern) are both this op.
#pragma once

#include "engine/tensor.h"
#include "ops/elementwise.h"
#include "ops/moe/grouped_gemm.h"

namespace hmoe::moe {

/// Row r of group g (offsets[g] <= r < offsets[g+1]):
///   y[r] = act(xrow(r) W1_g + b1_g) W2_g + b2_g,  xrow(r) = index ? x[index[r]] : x[r]
/// (index -1 reads a zero row). x [X, d], w1 [G, d, f], b1 [G, f], w2 [G, f, e], b2 [G, e]
/// (biases optional), offsets cpu i64 [G + 1] from 0 to M, index i32/i64 [M] -> y [M, e].
/// activation: relu, gelu_erf, gelu_tanh or silu.
///
/// Equal, bit for bit, to the composite grouped_gemm -> activation -> grouped_gemm (same
/// kernels and activation formulas), but cheaper in memory: the forward saves only the
/// pre-activation h [M, f], never the activation; with recompute not even h (it is made
/// again in the backward, one more GEMM of the six, a chunk of groups at a time).
/// chunk_rows > 0 runs the groups in chunks of whole groups of about that many rows, in
/// order; 0 (the default) lets the device choose. Neither chunking nor recompute changes
/// a result (f32 on hmoe's CPU kernel and f64 to the bit). bf16 / f16 on the CPU run as
/// the composite (each op computes in f32 and rounds its output to the half type, as the
/// device's kernels do). backend: whose grouped GEMM runs each of the six GEMMs on the
/// cuda device (moe::GroupedGemmBackend; the bit-identities above hold for hmoe's).
/// How: ops/moe/grouped_ffn.cpp.
Tensor grouped_ffn(const Tensor& x, const Tensor& w1, const Tensor& b1, const Tensor& w2, const Tensor& b2,
                   const Tensor& offsets, const Tensor& index = Tensor(), UnaryOp activation = UnaryOp::gelu_erf,
                   int64_t chunk_rows = 0, bool recompute = false,
                   GroupedGemmBackend backend = GroupedGemmBackend::hmoe);

}  // namespace hmoe::moe
