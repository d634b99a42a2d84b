/// @file
/// Views (reshape, permute, slice, expand, ...) and copies (contiguous, dtype and
/// device conversion) as differentiable ops; the Tensor members forward here.
#pragma once

#include <vector>

#include "engine/tensor.h"

namespace hmoe {

/// The strides a view of `t` with `shape` would have without copying, or false.
bool view_strides(const Tensor& t, const Shape& shape, Shape& strides_out);
/// Resolves one -1 in a requested shape against numel.
Shape infer_shape(const Shape& shape, int64_t numel, const char* op);

/// A view of t's storage with the given shape, strides and offset (checked to stay inside
/// the storage); differentiable.
Tensor as_strided(const Tensor& t, const Shape& shape, const Shape& strides, int64_t offset);

}  // namespace hmoe
