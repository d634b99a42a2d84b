/// @file
/// Reductions over any set of dims (keepdim optional): sum, mean, var, max/min with
/// indices, logsumexp, argmax, norm. All deterministic: fixed summation order.
#pragma once

#include <utility>
#include <vector>

#include "engine/tensor.h"

namespace hmoe {

/// Sum over dims (negative dims count from the end); keepdim keeps them as size 1.
Tensor sum(const Tensor& t, const std::vector<int64_t>& dims, bool keepdim = false);
Tensor sum(const Tensor& t);  ///< all elements -> 0-d
/// Mean over dims.
Tensor mean(const Tensor& t, const std::vector<int64_t>& dims, bool keepdim = false);
/// Mean of all elements -> 0-d.
Tensor mean(const Tensor& t);

/// Variance with `correction` (1 = unbiased, 0 = population).
Tensor var(const Tensor& t, const std::vector<int64_t>& dims, bool keepdim = false, int64_t correction = 1);
/// Values and i64 indices (the first of equal values) of the maximum along one dim.
std::pair<Tensor, Tensor> max(const Tensor& t, int64_t dim, bool keepdim = false);
/// Values and i64 indices (the first of equal values) of the minimum along one dim.
std::pair<Tensor, Tensor> min(const Tensor& t, int64_t dim, bool keepdim = false);
Tensor max(const Tensor& t);  ///< over all elements
/// Minimum over all elements.
Tensor min(const Tensor& t);
/// i64 indices of the maxima along dim (the first of equal values).
Tensor argmax(const Tensor& t, int64_t dim, bool keepdim = false);
/// i64 indices of the minima along dim (the first of equal values).
Tensor argmin(const Tensor& t, int64_t dim, bool keepdim = false);
/// log(sum(exp(t))) over dims, computed stably.
Tensor logsumexp(const Tensor& t, const std::vector<int64_t>& dims, bool keepdim = false);
/// p-norm over dims (p = 2 default); the gradient at 0 is 0.
Tensor norm(const Tensor& t, double p = 2.0, const std::vector<int64_t>& dims = {}, bool keepdim = false);

}  // namespace hmoe
