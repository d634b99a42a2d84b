// Reductions: planning into [outer, red, inner], dispatch, and gradients.
#include "ops/reduce.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "autograd/grad_mode.h"

#include "autograd/node.h"
#include "ops/broadcast.h"
#include "ops/dispatch.h"
#include "ops/elementwise.h"
#include "ops/factory.h"
#include "ops/reduce_kernels.h"

namespace hmoe {

HMOE_DEFINE_STUB(ReduceKernel, reduce_stub);

namespace {

// Canonical [outer, red, inner] form of reducing `dims` of t: the (possibly permuted,
// contiguous) input and the sizes; out_shape gets the keepdim / non-keepdim shape.
struct ReducePlan {
  Tensor input;
  int64_t outer = 1, red = 1, inner = 1;
  Shape out_shape;      // with or without kept dims, as requested
  Shape keepdim_shape;  // always with kept dims (size 1)
};
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

}  // namespace

Tensor sum(const Tensor& t, const std::vector<int64_t>& dims, bool keepdim) {
  // Integer and bool sums accumulate in i64.
  const Tensor src = t.dtype() == DType::b8 || t.dtype() == DType::i32 ? t.to(DType::i64) : t;
  const auto p = plan_reduce(src, dims, keepdim, "sum");
  Tensor out = run_reduce(ReduceOp::sum, p, src.dtype());
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

namespace {

std::vector<int64_t> all_dims(const Tensor& t) {
  std::vector<int64_t> d(static_cast<size_t>(t.dim()));
  std::iota(d.begin(), d.end(), 0);
  return d;
}

// How many elements each output of reducing `dims` combines (1 for a 0-d tensor).
int64_t reduced_count(const Tensor& t, const std::vector<int64_t>& dims, const char* op) {
  int64_t n = 1;
  for (int64_t d : dims) {
    const int64_t w = wrap_dim(d, t.dim(), op);
    if (w < t.dim()) n *= t.size(w);
  }
  return n;
}

void require_float(const char* op, const Tensor& t) {
  HMOE_CHECK(is_floating(t.dtype()), op, ": needs a floating-point tensor, got ", t.meta_str());
}

// One-hot mask (bool) of `index` (keepdim-shaped i64) along `dim` of `shape`: the
// gradient of max/min goes to the selected element only, without gather/scatter.
Tensor index_mask(const Tensor& index_keep, const Shape& shape, int64_t dim) {
  Shape s(shape.size(), 1);
  s[size_t(dim)] = shape[size_t(dim)];
  Tensor pos = arange(shape[size_t(dim)], {DType::i64, index_keep.device()}).reshape(s);
  return eq(pos, index_keep);
}

void check_extreme(const Tensor& t, int64_t dim, const char* name) {
  HMOE_CHECK(t.dtype() != DType::b8, name, ": not defined for bool tensors, got ", t.meta_str());
  HMOE_CHECK(t.dim() == 0 || t.size(dim) > 0, name, ": cannot reduce over the empty dim ", dim, " of ", t.meta_str());
}

std::pair<Tensor, Tensor> extreme(const Tensor& t, int64_t dim, bool keepdim, bool is_max) {
  const char* name = is_max ? "max" : "min";
  dim = wrap_dim(dim, t.dim(), name);
  check_extreme(t, dim, name);
  const auto p = plan_reduce(t, {dim}, keepdim, name);
  Tensor values = run_reduce(is_max ? ReduceOp::max : ReduceOp::min, p, t.dtype());
  Tensor idx = run_reduce(is_max ? ReduceOp::argmax : ReduceOp::argmin, p, DType::i64);
  if (t.dim() == 0) {  // a 0-d tensor is its own extreme
    autograd::record(name, {t}, {values}, [](const std::vector<Tensor>& g) { return std::vector<Tensor>{g[0]}; });
    return {values, idx};
  }
  autograd::record(name, {t}, {values},
                   [idx_k = idx.reshape(p.keepdim_shape), kd = p.keepdim_shape, in = t.shape(),
                    dim](const std::vector<Tensor>& g) {
                     const Tensor mask = index_mask(idx_k, in, dim);
                     return std::vector<Tensor>{where(mask, g[0].reshape(kd).expand(in), zeros({}, {g[0].dtype(), g[0].device()}))};
                   });
  return {values, idx};
}

Tensor arg_extreme(const Tensor& t, int64_t dim, bool keepdim, bool is_max) {
  const char* name = is_max ? "argmax" : "argmin";
  dim = wrap_dim(dim, t.dim(), name);
  check_extreme(t, dim, name);
  const auto p = plan_reduce(t.detach(), {dim}, keepdim, name);
  return run_reduce(is_max ? ReduceOp::argmax : ReduceOp::argmin, p, DType::i64);
}

}  // namespace

Tensor mean(const Tensor& t, const std::vector<int64_t>& dims, bool keepdim) {
  require_float("mean", t);
  const int64_t count = reduced_count(t, dims, "mean");
  return mul(sum(t, dims, keepdim), count == 0 ? std::nan("") : 1.0 / double(count));
}

Tensor mean(const Tensor& t) { return mean(t, all_dims(t)); }

std::pair<Tensor, Tensor> max(const Tensor& t, int64_t dim, bool keepdim) { return extreme(t, dim, keepdim, true); }
std::pair<Tensor, Tensor> min(const Tensor& t, int64_t dim, bool keepdim) { return extreme(t, dim, keepdim, false); }
// Over all elements; the gradient goes to the first extreme element.
Tensor max(const Tensor& t) { return max(t.reshape({-1}), 0).first; }
Tensor min(const Tensor& t) { return min(t.reshape({-1}), 0).first; }
Tensor argmax(const Tensor& t, int64_t dim, bool keepdim) { return arg_extreme(t, dim, keepdim, true); }
Tensor argmin(const Tensor& t, int64_t dim, bool keepdim) { return arg_extreme(t, dim, keepdim, false); }

Tensor var(const Tensor& t, const std::vector<int64_t>& dims, bool keepdim, int64_t correction) {
  require_float("var", t);
  HMOE_CHECK(correction >= 0, "var: correction must be >= 0, got ", correction);
  const int64_t n = reduced_count(t, dims, "var");
  // Two passes (mean, then centred squares): stable where E[x^2] - E[x]^2 is not.
  // Its gradient, 2 (x - mean) / (n - correction), falls out of the composite.
  const Tensor centered = t - mean(t, dims, true);
  const double denom = double(n - correction);
  return mul(sum(square(centered), dims, keepdim), denom > 0 ? 1.0 / denom : std::nan(""));
}

Tensor logsumexp(const Tensor& t, const std::vector<int64_t>& dims, bool keepdim) {
  require_float("logsumexp", t);
  const auto p = plan_reduce(t, dims, keepdim, "logsumexp");
  Tensor out = run_reduce(ReduceOp::logsumexp, p, t.dtype());
  autograd::record("logsumexp", {t}, {out},
                   [x = t.detach(), y = out.detach(), kd = p.keepdim_shape](const std::vector<Tensor>& g) {
                     // d lse / dx = softmax(x) = exp(x - lse); rows of -inf give 0, not NaN.
                     const Tensor yk = y.reshape(kd);
                     const Tensor safe = where(eq(yk, scalar_like(-INFINITY, yk)), zeros({}, {yk.dtype(), yk.device()}), yk);
                     return std::vector<Tensor>{g[0].reshape(kd) * exp(x - safe)};
                   });
  return out;
}

Tensor norm(const Tensor& t, double p, const std::vector<int64_t>& dims_in, bool keepdim) {
  require_float("norm", t);
  HMOE_CHECK(p > 0, "norm: p must be positive (or infinity), got ", p);
  const std::vector<int64_t> dims = dims_in.empty() ? all_dims(t) : dims_in;
  const auto plan = plan_reduce(t.detach(), dims, keepdim, "norm");
  HMOE_CHECK(!std::isinf(p) || reduced_count(t, dims, "norm") > 0 || shape_numel(plan.out_shape) == 0,
             "norm: the inf-norm over an empty dim of ", t.meta_str(), " is undefined");
  Tensor out;
  {
    NoGradGuard ng;
    if (std::isinf(p)) out = run_reduce(ReduceOp::max, plan_reduce(abs(t), dims, keepdim, "norm"), t.dtype());
    else if (p == 2.0) out = sqrt(sum(square(t), dims, keepdim));
    else if (p == 1.0) out = sum(abs(t), dims, keepdim);
    else out = pow(sum(pow(abs(t), p), dims, keepdim), 1.0 / p);
  }
  autograd::record("norm", {t}, {out}, [x = t.detach(), y = out.detach(), kd = plan.keepdim_shape, p, dims](
                                           const std::vector<Tensor>& g) {
    const Tensor yk = y.reshape(kd);
    const Tensor zero = zeros({}, {x.dtype(), x.device()});
    const Tensor one = ones({}, {x.dtype(), x.device()});
    const Tensor at_zero = eq(yk, zero);
    const Tensor gk = where(at_zero, zero, g[0].reshape(kd));  // gradient 0 where the norm is 0
    const Tensor safe = where(at_zero, one, yk);
    if (std::isinf(p)) {
      // Split evenly among the elements that reach the maximum.
      const Tensor hit = eq(abs(x), yk).to(x.dtype());
      return std::vector<Tensor>{gk * sign(x) * hit / sum(hit, dims, true)};
    }
    if (p == 1.0) return std::vector<Tensor>{gk * sign(x)};
    if (p == 2.0) return std::vector<Tensor>{gk * x / safe};
    // d||x||_p / dx = sign(x) (|x| / ||x||)^(p-1); 0 at x = 0 (also for p < 1).
    const Tensor r = pow(abs(x) / safe, p - 1.0);
    return std::vector<Tensor>{where(eq(x, zero), zero, gk * sign(x) * r)};
  });
  return out;
}

}  // namespace hmoe
