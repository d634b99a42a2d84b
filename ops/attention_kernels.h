// The kernel contract of the attention family (ops/attention.cpp: causal attention
// forward/backward and dropout): kernel signatures, their dispatch stubs, and the dropout
// mask rule every backend must reproduce bit-exactly. Filled by CPU: ops/cpu/attention.cpp;
// CUDA: ops/cuda/attention.cu (kernel bodies in attention.cuh, attention_wmma.cuh).
#pragma once

#include <cstdint>

#include "engine/rng.h"
#include "engine/tensor.h"
#include "ops/dispatch.h"

namespace hmoe {

// q, k, v: [B, H, T, Dh] with unit stride along Dh (any other strides). out: fresh
// contiguous [B, H, T, Dh] of q's dtype; lse: fresh contiguous [B, H, T] in the
// compute dtype (f64 for f64 inputs, else f32) receiving the logsumexp of each row
// of scaled, masked scores (what backward needs to recompute the probabilities).
using AttentionForwardKernel = void (*)(const Tensor& q, const Tensor& k, const Tensor& v, double scale,
                                        const Tensor& out, const Tensor& lse);
// grad_out: unit stride along Dh; dq, dk, dv: fresh contiguous [B, H, T, Dh].
using AttentionBackwardKernel = void (*)(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out,
                                         const Tensor& grad_out, const Tensor& lse, double scale, const Tensor& dq,
                                         const Tensor& dk, const Tensor& dv);
// in: contiguous; out: fresh contiguous, same shape and dtype. out[i] = dropout_apply(in[i]).
using DropoutKernel = void (*)(const Tensor& in, const Tensor& out, double p, uint64_t seed, uint64_t offset);

HMOE_DECLARE_STUB(AttentionForwardKernel, attention_forward_stub);
HMOE_DECLARE_STUB(AttentionBackwardKernel, attention_backward_stub);
HMOE_DECLARE_STUB(DropoutKernel, dropout_stub);

// The dropout mask. Element i (row-major index in the input) of a draw at (seed,
// offset) is kept iff  philox_uniform(seed, offset, i, RngStream::dropout) > float(p):
// the uniform is (u32 >> 8 + 1) / 2^24 from word 0 of Philox4x32-10 with counter
// (offset + i, RngStream::dropout) and key seed, compared in f32 with p rounded to f32.
// Kept elements are multiplied by scale = 1 / (1 - p) computed in f64 and rounded to
// the compute type (f32 for f32/bf16/f16, f64 for f64), product rounded once to the
// storage type; dropped elements are exactly 0 (even if the input is inf or NaN).
HMOE_HD inline bool dropout_keep(uint64_t seed, uint64_t offset, uint64_t i, float p) {
  return philox_uniform(seed, offset, i, RngStream::dropout) > p;
}

}  // namespace hmoe
