/// @file
/// Order statistics and scans: topk (ties to the lower index), stable sort/argsort,
/// cumsum, bincount.
#pragma once

#include <utility>

#include "engine/tensor.h"

namespace hmoe {

/// values and i64 indices of the k largest (or smallest) along dim, sorted; equal
/// values keep the lower index first.
std::pair<Tensor, Tensor> topk(const Tensor& t, int64_t k, int64_t dim = -1, bool largest = true);
/// Values and i64 indices sorted along dim; stable: equal keys keep their order.
std::pair<Tensor, Tensor> sort(const Tensor& t, int64_t dim = -1, bool descending = false);
/// The i64 indices that sort t along dim (stable).
Tensor argsort(const Tensor& t, int64_t dim = -1, bool descending = false);
/// Running sums along dim.
Tensor cumsum(const Tensor& t, int64_t dim);
/// Counts of each value in a 1-d non-negative integer tensor; length max(max+1, minlength); optional weights.
Tensor bincount(const Tensor& ids, int64_t minlength = 0, const Tensor& weights = Tensor());

}  // namespace hmoe
