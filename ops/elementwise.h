/// @file
/// Elementwise ops with NumPy broadcasting: arithmetic, math functions, activations,
/// comparisons and where; each differentiable op has its backward in elementwise.cpp.
#pragma once

#include "engine/tensor.h"

namespace hmoe {

/// The elementwise functions by name: users pass one as an activation (e.g. to
/// moe::grouped_ffn); the kernels take one (ops/elementwise_kernels.h).
enum class UnaryOp : uint8_t {
  neg, exp, log, sqrt, rsqrt, abs, relu, gelu_erf, gelu_tanh, silu, sigmoid, tanh, softplus,
  pow_scalar,   ///< x^p0
  clamp,        ///< clamp(x, p0, p1)
  mul_scalar,   ///< x * p0
  add_scalar,   ///< x + p0
  sign, logical_not, square,
};

/// a + b, broadcast.
Tensor add(const Tensor& a, const Tensor& b);
/// dst += src in place (src broadcast to dst's shape and converted to its dtype), without
/// autograd: gradient accumulation and optimizer-style updates. One pass over dst when it
/// is contiguous.
void add_(const Tensor& dst, const Tensor& src);
/// a - b, broadcast.
Tensor sub(const Tensor& a, const Tensor& b);
/// a * b, broadcast.
Tensor mul(const Tensor& a, const Tensor& b);
/// a / b, broadcast.
Tensor div(const Tensor& a, const Tensor& b);
Tensor maximum(const Tensor& a, const Tensor& b);  ///< gradient to the larger; ties split evenly
/// The elementwise smaller of a and b (gradient as maximum's).
Tensor minimum(const Tensor& a, const Tensor& b);
/// a + s.
Tensor add(const Tensor& a, double s);
/// a * s.
Tensor mul(const Tensor& a, double s);
/// a to the power p.
Tensor pow(const Tensor& a, double p);

/// -a.
Tensor neg(const Tensor& a);
/// e^a.
Tensor exp(const Tensor& a);
/// Natural logarithm.
Tensor log(const Tensor& a);
/// Square root.
Tensor sqrt(const Tensor& a);
/// 1 / sqrt(a).
Tensor rsqrt(const Tensor& a);
/// |a|.
Tensor abs(const Tensor& a);
/// a * a.
Tensor square(const Tensor& a);
Tensor sign(const Tensor& a);  ///< no gradient
/// a clamped to [lo, hi] (no gradient outside).
Tensor clamp(const Tensor& a, double lo, double hi);
/// max(a, 0).
Tensor relu(const Tensor& a);
/// GELU: exact (erf) or, with tanh_approximation, the tanh form.
Tensor gelu(const Tensor& a, bool tanh_approximation = false);
/// a * sigmoid(a).
Tensor silu(const Tensor& a);
/// 1 / (1 + e^-a).
Tensor sigmoid(const Tensor& a);
/// Hyperbolic tangent.
Tensor tanh(const Tensor& a);
/// log(1 + e^(beta a)) / beta; a itself where beta a > threshold.
Tensor softplus(const Tensor& a, double beta = 1.0, double threshold = 20.0);

/// cond: bool tensor; a, b broadcast together with cond.
Tensor where(const Tensor& cond, const Tensor& a, const Tensor& b);

/// a == b. Comparisons return bool tensors and record no gradient.
Tensor eq(const Tensor& a, const Tensor& b);
/// a != b.
Tensor ne(const Tensor& a, const Tensor& b);
/// a < b.
Tensor lt(const Tensor& a, const Tensor& b);
/// a <= b.
Tensor le(const Tensor& a, const Tensor& b);
/// a > b.
Tensor gt(const Tensor& a, const Tensor& b);
/// a >= b.
Tensor ge(const Tensor& a, const Tensor& b);
/// Logical not of a bool tensor.
Tensor logical_not(const Tensor& a);

/// @{
/// Arithmetic operators: add, sub, mul, div and neg, with a tensor or a scalar on either side.
inline Tensor operator+(const Tensor& a, const Tensor& b) { return add(a, b); }
inline Tensor operator-(const Tensor& a, const Tensor& b) { return sub(a, b); }
inline Tensor operator*(const Tensor& a, const Tensor& b) { return mul(a, b); }
inline Tensor operator/(const Tensor& a, const Tensor& b) { return div(a, b); }
inline Tensor operator-(const Tensor& a) { return neg(a); }
inline Tensor operator+(const Tensor& a, double s) { return add(a, s); }
inline Tensor operator+(double s, const Tensor& a) { return add(a, s); }
inline Tensor operator-(const Tensor& a, double s) { return add(a, -s); }
inline Tensor operator-(double s, const Tensor& a) { return add(neg(a), s); }
inline Tensor operator*(const Tensor& a, double s) { return mul(a, s); }
inline Tensor operator*(double s, const Tensor& a) { return mul(a, s); }
inline Tensor operator/(const Tensor& a, double s) { return mul(a, 1.0 / s); }
inline Tensor operator/(double s, const Tensor& a) { return mul(pow(a, -1.0), s); }
/// @}

}  // namespace hmoe
