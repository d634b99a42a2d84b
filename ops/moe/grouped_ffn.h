// The grouped FFN: two grouped GEMMs with an activation between them, as one op whose
// backward keeps only the pre-activation. The experts of an MoE layer and the HyperMoE
// adapters (one per selection pattern) are both this op.
#pragma once

#include "engine/tensor.h"
#include "ops/elementwise.h"

namespace hmoe::moe {

// Row r of group g (offsets[g] <= r < offsets[g+1]):
//   y[r] = act(xrow(r) W1_g + b1_g) W2_g + b2_g,  xrow(r) = index ? x[index[r]] : x[r]
// (index -1 reads a zero row). x [X, d], w1 [G, d, f], b1 [G, f], w2 [G, f, e], b2 [G, e]
// (biases optional), offsets cpu i64 [G + 1] from 0 to M, index i32/i64 [M] -> y [M, e].
// activation: relu, gelu_erf, gelu_tanh or silu.
//
// Equal, bit for bit, to the composite grouped_gemm -> activation -> grouped_gemm (same
// kernels and activation formulas), but cheaper in memory: the forward saves only the
// pre-activation h [M, f], never the activation; the backward recomputes the activation
// for dW2, writes dh over h when the graph is not retained, and makes each gradient only
// when it is first written. The activation is fused into the GEMMs on every device
// (applied to h while the second GEMM and dW2 load it; dh made in the epilogue of
// dy W2^T), so no other [M, f] buffer exists. chunk_rows > 0 runs groups in chunks of
// about that many rows (whole groups); 0 (the default): one chunk. Chunking never
// changes a result: every kernel computes each group's rows and weight gradient on their
// own. bf16 / f16 on the CPU run as that composite (each op computes
// in f32 and rounds its output to the half type, as the device's kernels do).
Tensor grouped_ffn(const Tensor& x, const Tensor& w1, const Tensor& b1, const Tensor& w2, const Tensor& b2,
                   const Tensor& offsets, const Tensor& index = Tensor(), UnaryOp activation = UnaryOp::gelu_erf,
                   int64_t chunk_rows = 0);

}  // namespace hmoe::moe
