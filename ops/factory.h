/// @file
/// Tensor factories: constant fills, ranges, host data, and random tensors drawn
/// from the counter-based Philox generator (same values on every backend).
#pragma once

#include <vector>

#include "engine/rng.h"
#include "engine/tensor.h"

namespace hmoe {

/// A new tensor whose elements are not initialised.
Tensor empty(const Shape& shape, TensorOptions opts = {});
/// A new tensor of zeros.
Tensor zeros(const Shape& shape, TensorOptions opts = {});
/// A new tensor of ones.
Tensor ones(const Shape& shape, TensorOptions opts = {});
/// A new tensor filled with value.
Tensor full(const Shape& shape, double value, TensorOptions opts = {});
/// [start, end) in steps of step; dtype i64 unless opts says otherwise.
Tensor arange(double start, double end, double step = 1.0, TensorOptions opts = {.dtype = DType::i64});
/// [0, end) in steps of 1; dtype i64 unless opts says otherwise.
Tensor arange(int64_t end, TensorOptions opts = {.dtype = DType::i64});

/// Copies host values into a new tensor of `shape` (values.size() must match), converting to opts.dtype.
Tensor from_vector(const std::vector<double>& values, const Shape& shape, TensorOptions opts = {});
/// @{
/// The same from float, int64 and int32 host values (i64 and i32 tensors by default for the integer ones).
Tensor from_vector(const std::vector<float>& values, const Shape& shape, TensorOptions opts = {});
Tensor from_vector(const std::vector<int64_t>& values, const Shape& shape, TensorOptions opts = {.dtype = DType::i64});
Tensor from_vector(const std::vector<int32_t>& values, const Shape& shape, TensorOptions opts = {.dtype = DType::i32});
/// @}

/// Uniform values in [lo, hi); the draw advances gen by numel.
Tensor uniform(const Shape& shape, Generator& gen, double lo = 0.0, double hi = 1.0, TensorOptions opts = {});
/// Normal(mean, std) values; the draw advances gen by numel.
Tensor normal(const Shape& shape, Generator& gen, double mean = 0.0, double std = 1.0, TensorOptions opts = {});

/// A tensor like t (shape, dtype, device), not initialised.
Tensor empty_like(const Tensor& t);
/// Zeros like t.
Tensor zeros_like(const Tensor& t);
/// Ones like t.
Tensor ones_like(const Tensor& t);
/// value like t.
Tensor full_like(const Tensor& t, double value);

}  // namespace hmoe
