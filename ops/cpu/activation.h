// The FFN activations (relu, gelu_erf, gelu_tanh, silu) and their gradients over
// contiguous runs: the very loops the unary kernels run on contiguous f32 / f64 tensors
// (ops/cpu/elementwise.cpp), for kernels that fuse an activation into a GEMM (the grouped
// GEMM's A pack and epilogue) and must give the unfused composite's bits.
#pragma once

#include <cstdint>

#include "ops/elementwise.h"

namespace hmoe::ops::cpu {

// y = act(x); out = g * act'(x). y may be x, out may be g (the same run, not a shifted one).
template <typename T>
using ActivationRows = void (*)(const T* x, T* y, int64_t n);
template <typename T>
using ActivationGradRows = void (*)(const T* x, const T* g, T* out, int64_t n);

// Whether op is one of the four; each sends 0 to 0 (so a zero row stays zero).
bool is_ffn_activation(UnaryOp op);
// T = float or double; nullptr for an op that is not one of the four.
template <typename T>
ActivationRows<T> activation_rows(UnaryOp op);
template <typename T>
ActivationGradRows<T> activation_grad_rows(UnaryOp op);

}  // namespace hmoe::ops::cpu
