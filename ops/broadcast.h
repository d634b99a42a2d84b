/// @file
/// What the ops' backward formulas share for broadcast operands: sum_to, the adjoint of
/// expand, and scalar_like. Its own room so that the elementwise ops need no reduction
/// (ops/reduce.cpp builds on ops/elementwise.h; both build on this).
#pragma once

#include "engine/shape.h"
#include "engine/tensor.h"

namespace hmoe {

/// Reduces a broadcast gradient back to `shape` by summing the broadcast dims.
Tensor sum_to(const Tensor& g, const Shape& shape);

/// A 0-d tensor holding s, in dtype/device of `like`.
Tensor scalar_like(double s, const Tensor& like);

}  // namespace hmoe
