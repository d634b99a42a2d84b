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

enum class ReduceOp : uint8_t { sum, max, min, argmax, argmin, logsumexp };

// Kernel interface: `in` is contiguous and viewed as [outer, red, inner]; out is
// contiguous [outer, inner]. argmax/argmin write i64 indices (first of ties).
using ReduceKernel = void (*)(ReduceOp op, const Tensor& in, const Tensor& out, int64_t outer, int64_t red,
                              int64_t inner);

namespace detail {
// Canonical [outer, red, inner] form of reducing `dims` of t: the (possibly permuted,
// contiguous) input and the sizes; out_shape gets the keepdim / non-keepdim shape.
struct ReducePlan {
  Tensor input;
  int64_t outer = 1, red = 1, inner = 1;
  Shape out_shape;       // with or without kept dims, as requested
  Shape keepdim_shape;   // always with kept dims (size 1)
};
ReducePlan plan_reduce(const Tensor& t, const std::vector<int64_t>& dims, bool keepdim, const char* op);
Tensor run_reduce(ReduceOp op, const ReducePlan& p, DType out_dtype);
}  // namespace detail

}  // namespace hmoe
