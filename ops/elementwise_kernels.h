// The kernel contract of the elementwise family (ops/elementwise.cpp): kernel
// signatures and their dispatch stubs. Filled by CPU: ops/cpu/elementwise.cpp;
// CUDA: ops/cuda/elementwise.cu.
#pragma once

#include <cstdint>

#include "engine/tensor.h"
#include "ops/dispatch.h"
#include "ops/elementwise.h"

namespace hmoe {

// The binary kernel's ops (the public add, sub, ..., ge each pick one).
// clang-format off: grouped, as UnaryOp
enum class BinaryOp : uint8_t {
  add, sub, mul, div, maximum, minimum,
  eq, ne, lt, le, gt, ge,  // produce bool
};
// clang-format on

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

HMOE_DECLARE_STUB(UnaryKernel, unary_stub);
HMOE_DECLARE_STUB(UnaryBackwardKernel, unary_backward_stub);
HMOE_DECLARE_STUB(BinaryKernel, binary_stub);
HMOE_DECLARE_STUB(WhereKernel, where_stub);

}  // namespace hmoe
