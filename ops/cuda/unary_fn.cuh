// The elementwise activations and their derivatives as device functors on compute values
// (float for f32 and the half types, double for f64): the unary kernels
// (ops/cuda/elementwise.cu) and every kernel that fuses an activation (the grouped FFN's
// GEMMs) compute them here, so a fused kernel gives the unfused bits.
// Formulas as in ops/cpu/elementwise.cpp.
#pragma once

#include <type_traits>

#include "engine/cuda/device_code.h"
#include "ops/cuda/kernel_utils.cuh"
#include "ops/elementwise.h"

namespace hmoe::ops::cuda {

// clang-format off: one line per type or op reads as a table
// ---- device math beyond the toolkit's (ops/cuda/kernel_utils.cuh) -------------------------
template <typename C>
__device__ __forceinline__ C d_sigmoid(C x) {
  return C(1) / (C(1) + d_exp(-x));
}

// ---- the ops, as functors on compute values (formulas as in ops/cpu/elementwise.cpp) -----
// The two GELUs use equivalent forms that stay accurate in the negative tail, where
// 1 + erf(x) and 1 + tanh(z) cancel (at x = -5 in f32 they keep no correct digit):
// 0.5 (1 + erf(x / sqrt 2)) = 0.5 erfc(-x / sqrt 2) and 0.5 (1 + tanh z) = sigmoid(2 z).
// erfc costs more than erf (bf16 GELU is compute-bound on an H100: 1.9 vs 2.5 TB/s),
// and a bf16 / f16 result cannot show the difference, so half types keep 1 + erf.

// Phi(x), the standard normal CDF, for values stored as T.
template <typename T, typename C>
__device__ __forceinline__ C gelu_cdf(C x) {
  if constexpr (std::is_same_v<T, __nv_bfloat16> || std::is_same_v<T, __half>)
    return C(0.5) * (C(1) + erff(x * C(0.70710678118654752440)));
  else
    return C(0.5) * d_erfc(x * C(-0.70710678118654752440));
}
// 2 z for the tanh GELU, z = sqrt(2 / pi) (x + 0.044715 x^3).
template <typename C>
__device__ __forceinline__ C gelu_tanh_2z(C x) {
  return C(2 * 0.7978845608028654) * d_fma(C(0.044715) * x * x, x, x);
}

// y = op(x); a, b are the op's parameters (p0, p1) in the compute type C of the storage
// type T.
template <UnaryOp K, typename T, typename C = device_compute_t<T>>
struct UnaryFn {
  C a, b;
  __device__ __forceinline__ C operator()(C x) const {
    if constexpr (K == UnaryOp::neg)
      return -x;
    else if constexpr (K == UnaryOp::abs)
      return x < C(0) ? C(-x) : x;
    else if constexpr (K == UnaryOp::square)
      return x * x;
    else if constexpr (K == UnaryOp::sign)
      return C((x > C(0)) - (x < C(0)));
    else if constexpr (K == UnaryOp::mul_scalar)
      return x * a;
    else if constexpr (K == UnaryOp::add_scalar)
      return x + a;
    else if constexpr (K == UnaryOp::clamp)
      return x < a ? a : (x > b ? b : x);
    else if constexpr (K == UnaryOp::relu)
      return x > C(0) ? x : C(0);
    else if constexpr (K == UnaryOp::exp)
      return d_exp(x);
    else if constexpr (K == UnaryOp::log)
      return d_log(x);
    else if constexpr (K == UnaryOp::sqrt)
      return d_sqrt(x);
    else if constexpr (K == UnaryOp::rsqrt)
      return d_rsqrt(x);
    else if constexpr (K == UnaryOp::gelu_erf)
      return x * gelu_cdf<T>(x);
    else if constexpr (K == UnaryOp::gelu_tanh)
      return x * d_sigmoid(gelu_tanh_2z(x));
    else if constexpr (K == UnaryOp::silu)
      return x * d_sigmoid(x);
    else if constexpr (K == UnaryOp::sigmoid)
      return d_sigmoid(x);
    else if constexpr (K == UnaryOp::tanh)
      return d_tanh(x);
    else if constexpr (K == UnaryOp::softplus) {
      const C bx = a * x;  // a = beta, b = threshold
      return bx > b ? x : d_log1p(d_exp(bx)) / a;
    } else {
      static_assert(K == UnaryOp::pow_scalar, "UnaryFn: unhandled op");
      return d_pow(x, a);  // p0 == 2 runs as square (the host picks it), as on the CPU
    }
  }
};

// grad_in = grad_out * f'(x) for the activations with a fused backward.
template <UnaryOp K, typename T, typename C = device_compute_t<T>>
struct UnaryGradFn {
  C a, b;
  __device__ __forceinline__ C operator()(C v, C g) const { return g * derivative(v); }
  __device__ __forceinline__ C derivative(C v) const {
    if constexpr (K == UnaryOp::relu)
      return C(v > C(0));
    else if constexpr (K == UnaryOp::clamp)
      return C(v >= a && v <= b);
    else if constexpr (K == UnaryOp::gelu_erf) {
      const C pdf = d_exp(C(-0.5) * v * v) * C(0.39894228040143267794);
      return d_fma(v, pdf, gelu_cdf<T>(v));
    } else if constexpr (K == UnaryOp::gelu_tanh) {
      // With s = sigmoid(2z): 0.5 (1 + tanh z) = s and 1 - tanh^2 z = 4 s (1 - s).
      const C k = C(0.7978845608028654), c = C(0.044715);
      const C s = d_sigmoid(gelu_tanh_2z(v));
      return d_fma(C(2) * v * s * (C(1) - s) * k, d_fma(C(3) * c * v, v, C(1)), s);
    } else if constexpr (K == UnaryOp::silu) {
      const C s = d_sigmoid(v);
      return s * d_fma(v, C(1) - s, C(1));
    } else if constexpr (K == UnaryOp::sigmoid) {
      const C s = d_sigmoid(v);
      return s * (C(1) - s);
    } else if constexpr (K == UnaryOp::tanh) {
      const C t = d_tanh(v);
      return C(1) - t * t;
    } else {
      static_assert(K == UnaryOp::softplus, "UnaryGradFn: unhandled op");
      return a * v > b ? C(1) : d_sigmoid(a * v);
    }
  }
};

// clang-format on

}  // namespace hmoe::ops::cuda
