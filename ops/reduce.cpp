// Reductions: planning into [outer, red, inner], dispatch, and gradients.
#include "ops/reduce.h"

#include <algorithm>
#include <numeric>

#include "autograd/node.h"
#include "ops/dispatch.h"
#include "ops/elementwise.h"
#include "ops/factory.h"

namespace hmoe {

HMOE_DEFINE_STUB(ReduceKernel, reduce_stub);

namespace detail {

ReducePlan plan_reduce(const Tensor& t, const std::vector<int64_t>& dims_in, bool keepdim, const char* op) {
  const int64_t r = t.dim();
  std::vector<bool> is_red(size_t(std::max<int64_t>(r, 1)), false);
  for (int64_t d : dims_in) {
    const int64_t w = wrap_dim(d, r, op);
    HMOE_CHECK(!is_red[size_t(w)], op, ": dim ", d, " is listed twice");
    is_red[size_t(w)] = true;
  }
  ReducePlan p;
  for (int64_t d = 0; d < r; ++d) {
    p.keepdim_shape.push_back(is_red[size_t(d)] ? 1 : t.size(d));
    if (!is_red[size_t(d)] || keepdim) p.out_shape.push_back(p.keepdim_shape.back());
  }
  // If the reduced dims form one contiguous block, no permutation is needed.
  int64_t first = -1, last = -1;
  for (int64_t d = 0; d < r; ++d)
    if (is_red[size_t(d)]) {
      if (first < 0) first = d;
      last = d;
    }
  bool block = first >= 0;
  for (int64_t d = first; block && d <= last; ++d) block = is_red[size_t(d)];
  if (first < 0) {  // nothing to reduce
    p.input = t.contiguous();
    p.outer = t.numel();
    return p;
  }
  if (block) {
    p.input = t.contiguous();
    for (int64_t d = 0; d < first; ++d) p.outer *= t.size(d);
    for (int64_t d = first; d <= last; ++d) p.red *= t.size(d);
    for (int64_t d = last + 1; d < r; ++d) p.inner *= t.size(d);
    return p;
  }
  std::vector<int64_t> perm;
  for (int64_t d = 0; d < r; ++d)
    if (!is_red[size_t(d)]) {
      perm.push_back(d);
      p.outer *= t.size(d);
    }
  for (int64_t d = 0; d < r; ++d)
    if (is_red[size_t(d)]) {
      perm.push_back(d);
      p.red *= t.size(d);
    }
  p.input = t.detach().permute(perm).contiguous();
  return p;
}

Tensor run_reduce(ReduceOp op, const ReducePlan& p, DType out_dtype) {
  Tensor out = Tensor::empty(p.out_shape, {out_dtype, p.input.device()});
  reduce_stub.get(p.input.device())(op, p.input.detach(), out, p.outer, p.red, p.inner);
  return out;
}

}  // namespace detail

Tensor sum(const Tensor& t, const std::vector<int64_t>& dims, bool keepdim) {
  // Integer and bool sums accumulate in i64.
  const Tensor src = t.dtype() == DType::b8 || t.dtype() == DType::i32 ? t.to(DType::i64) : t;
  const auto p = detail::plan_reduce(src, dims, keepdim, "sum");
  Tensor out = detail::run_reduce(ReduceOp::sum, p, src.dtype());
  autograd::record("sum", {t}, {out}, [in = t.shape(), kd = p.keepdim_shape](const std::vector<Tensor>& g) {
    return std::vector<Tensor>{g[0].reshape(kd).expand(in)};
  });
  return out;
}

Tensor sum(const Tensor& t) {
  std::vector<int64_t> all(static_cast<size_t>(t.dim()));
  std::iota(all.begin(), all.end(), 0);
  return sum(t, all);
}

Tensor mean(const Tensor& t, const std::vector<int64_t>& dims, bool keepdim) {
  HMOE_CHECK(is_floating(t.dtype()), "mean: needs a floating-point tensor, got ", t.meta_str());
  int64_t count = 1;
  for (int64_t d : dims) count *= t.size(d);
  return mul(sum(t, dims, keepdim), count == 0 ? std::nan("") : 1.0 / double(count));
}

Tensor mean(const Tensor& t) {
  std::vector<int64_t> all(static_cast<size_t>(t.dim()));
  std::iota(all.begin(), all.end(), 0);
  return mean(t, all);
}

}  // namespace hmoe
