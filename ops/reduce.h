// Reductions over any set of dims (keepdim optional): sum, mean, var, max/min with
// indices, logsumexp, argmax, norm. All deterministic: fixed summation order.
#pragma once

#include <utility>
#include <vector>

#include "engine/tensor.h"

namespace hmoe {

Tensor sum(const Tensor& t, const std::vector<int64_t>& dims, bool keepdim = false);
Tensor sum(const Tensor& t);  // all elements -> 0-d
Tensor mean(const Tensor& t, const std::vector<int64_t>& dims, bool keepdim = false);
Tensor mean(const Tensor& t);

// Variance with `correction` (1 = unbiased, 0 = population).
Tensor var(const Tensor& t, const std::vector<int64_t>& dims, bool keepdim = false, int64_t correction = 1);
// Values and i64 indices (the first of equal values) along one dim.
std::pair<Tensor, Tensor> max(const Tensor& t, int64_t dim, bool keepdim = false);
std::pair<Tensor, Tensor> min(const Tensor& t, int64_t dim, bool keepdim = false);
Tensor max(const Tensor& t);  // over all elements
Tensor min(const Tensor& t);
Tensor argmax(const Tensor& t, int64_t dim, bool keepdim = false);
Tensor argmin(const Tensor& t, int64_t dim, bool keepdim = false);
Tensor logsumexp(const Tensor& t, const std::vector<int64_t>& dims, bool keepdim = false);
// p-norm over dims (p = 2 default); the gradient at 0 is 0.
Tensor norm(const Tensor& t, double p = 2.0, const std::vector<int64_t>& dims = {}, bool keepdim = false);

}  // namespace hmoe
