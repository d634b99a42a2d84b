// Elementwise ops with NumPy broadcasting: arithmetic, math functions, activations,
// comparisons and where; each differentiable op has its backward in elementwise.cpp.
#pragma once

#include "engine/tensor.h"

namespace hmoe {

// The elementwise functions by name: users pass one as an activation (e.g. to
// moe::grouped_ffn); the kernels take one (ops/elementwise_kernels.h).
enum class UnaryOp : uint8_t {
  neg, exp, log, sqrt, rsqrt, abs, relu, gelu_erf, gelu_tanh, silu, sigmoid, tanh, softplus,
  pow_scalar,   // x^p0
  clamp,        // clamp(x, p0, p1)
  mul_scalar,   // x * p0
  add_scalar,   // x + p0
  sign, logical_not, square,
};

Tensor add(const Tensor& a, const Tensor& b);
// dst += src in place (src broadcast to dst's shape and converted to its dtype), without
// autograd: gradient accumulation and optimizer-style updates. One pass over dst when it
// is contiguous.
void add_(const Tensor& dst, const Tensor& src);
Tensor sub(const Tensor& a, const Tensor& b);
Tensor mul(const Tensor& a, const Tensor& b);
Tensor div(const Tensor& a, const Tensor& b);
Tensor maximum(const Tensor& a, const Tensor& b);  // gradient to the larger; ties split evenly
Tensor minimum(const Tensor& a, const Tensor& b);
Tensor add(const Tensor& a, double s);
Tensor mul(const Tensor& a, double s);
Tensor pow(const Tensor& a, double p);

Tensor neg(const Tensor& a);
Tensor exp(const Tensor& a);
Tensor log(const Tensor& a);
Tensor sqrt(const Tensor& a);
Tensor rsqrt(const Tensor& a);
Tensor abs(const Tensor& a);
Tensor square(const Tensor& a);
Tensor sign(const Tensor& a);  // no gradient
Tensor clamp(const Tensor& a, double lo, double hi);
Tensor relu(const Tensor& a);
Tensor gelu(const Tensor& a, bool tanh_approximation = false);
Tensor silu(const Tensor& a);
Tensor sigmoid(const Tensor& a);
Tensor tanh(const Tensor& a);
Tensor softplus(const Tensor& a, double beta = 1.0, double threshold = 20.0);

// cond: bool tensor; a, b broadcast together with cond.
Tensor where(const Tensor& cond, const Tensor& a, const Tensor& b);

// Comparisons return bool tensors and record no gradient.
Tensor eq(const Tensor& a, const Tensor& b);
Tensor ne(const Tensor& a, const Tensor& b);
Tensor lt(const Tensor& a, const Tensor& b);
Tensor le(const Tensor& a, const Tensor& b);
Tensor gt(const Tensor& a, const Tensor& b);
Tensor ge(const Tensor& a, const Tensor& b);
Tensor logical_not(const Tensor& a);

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

}  // namespace hmoe
