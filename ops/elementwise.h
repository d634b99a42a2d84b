// Elementwise ops with NumPy broadcasting: arithmetic, math functions, activations,
// comparisons and where; each differentiable op has its backward in elementwise.cpp.
#pragma once

#include "engine/tensor.h"

namespace hmoe {

enum class UnaryOp : uint8_t {
  neg, exp, log, sqrt, rsqrt, abs, relu, gelu_erf, gelu_tanh, silu, sigmoid, tanh, softplus,
  pow_scalar,   // x^p0
  clamp,        // clamp(x, p0, p1)
  mul_scalar,   // x * p0
  add_scalar,   // x + p0
  sign, logical_not, square,
};

enum class BinaryOp : uint8_t {
  add, sub, mul, div, maximum, minimum,
  eq, ne, lt, le, gt, ge,  // produce bool
};

// The kernel interfaces every backend implements. `out` is a fresh contiguous tensor
// with the broadcast shape; inputs are already expanded to it (possibly strided) and
// of out's dtype (comparisons: of the common input dtype). A binary kernel's out may
// also be its input `a` itself (add_: contiguous, same layout): every element is read
// before the same element is written, so the update in place is exact.
using UnaryKernel = void (*)(UnaryOp op, const Tensor& in, const Tensor& out, double p0, double p1);
// grad_in = grad_out * f'(x) for the activations (uses x; y = f(x) where cheaper).
// grad_in may be grad_out or x itself (contiguous, one layout): each element is read
// before it is written.
using UnaryBackwardKernel = void (*)(UnaryOp op, const Tensor& x, const Tensor& grad_out, const Tensor& grad_in,
                                     double p0, double p1);
using BinaryKernel = void (*)(BinaryOp op, const Tensor& a, const Tensor& b, const Tensor& out);
using WhereKernel = void (*)(const Tensor& cond, const Tensor& a, const Tensor& b, const Tensor& out);

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

// Reduces a broadcast gradient back to `shape` by summing the broadcast dims.
Tensor sum_to(const Tensor& g, const Shape& shape);

// A 0-d tensor holding s, in dtype/device of `like`.
Tensor scalar_like(double s, const Tensor& like);

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
