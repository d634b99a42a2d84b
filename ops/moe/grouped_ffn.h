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
// for dW2, writes dh over h when the graph is not retained, writes dx's rows over dy's
// (d = e, a dy nothing else holds), and makes each gradient only when it is first
// written. The activation is fused into the GEMMs on every device (applied to h while the
// second GEMM and dW2 load it; dh made in the epilogue of dy W2^T), so no other [M, f]
// buffer exists. recompute: h is not saved either, but made again in the backward (one
// more GEMM, the first, of the six), a chunk of groups at a time.
//
// Groups run in chunks of whole groups: chunk_rows > 0, chunks of about that many rows,
// in order; 0 (the default): on the CPU with at least two groups per thread, every group
// a task on the thread pool, its GEMMs run whole on one thread (largest groups first;
// recomputing, a task holds its group's h, in parts of at most 2 MiB in f32); otherwise
// one chunk, or recomputing about a quarter of the rows per chunk. Neither chunking nor
// recompute changes a result (f32 on hmoe's CPU kernel and f64 to the bit; the parts'
// weight gradients in f32 continue each other's sums). bf16 / f16 on the CPU run as that
// composite (each op computes in f32 and rounds its output to the half type, as the
// device's kernels do).
Tensor grouped_ffn(const Tensor& x, const Tensor& w1, const Tensor& b1, const Tensor& w2, const Tensor& b2,
                   const Tensor& offsets, const Tensor& index = Tensor(), UnaryOp activation = UnaryOp::gelu_erf,
                   int64_t chunk_rows = 0, bool recompute = false);

}  // namespace hmoe::moe
