// topk, stable sort/argsort, cumsum and bincount: checks, dispatch and gradients.
// Order convention (as PyTorch): NaN sorts as the largest value; equal keys keep the
// lower index first in both directions (so sort is stable, descending too).
#include "ops/sort.h"

#include <algorithm>

#include "autograd/node.h"
#include "ops/index_kernels.h"
#include "ops/dispatch.h"
#include "ops/factory.h"
#include "ops/index.h"
#include "ops/reduce.h"

namespace hmoe {

HMOE_DEFINE_STUB(SortKernel, sort_stub);
HMOE_DEFINE_STUB(CumsumKernel, cumsum_stub);
HMOE_DEFINE_STUB(BincountKernel, bincount_stub);

using autograd::record;

namespace {

// The first k of each line in order, values and i64 indices; gradients of the values
// scatter back to the indices (distinct within a line, so the scatter is exact).
std::pair<Tensor, Tensor> ordered(const Tensor& t, int64_t dim, int64_t k, bool descending, const char* op) {
  HMOE_CHECK(t.defined(), op, ": input is undefined");
  HMOE_CHECK(t.dtype() != DType::b8, op, ": not defined for bool tensors, got ", t.meta_str());
  dim = wrap_dim(dim, t.dim(), op);
  const Tensor t1 = t.dim() == 0 ? t.detach().reshape({1}) : t.detach();  // 0-d acts as one element
  const int64_t n = t1.size(dim);
  HMOE_CHECK(k >= 0 && k <= n, op, ": k = ", k, " is out of range [0, ", n, "] for ", t.meta_str(), " along dim ",
             dim);
  Shape shape = t1.shape();
  shape[size_t(dim)] = k;
  const Shape out_shape = t.dim() == 0 && k == 1 ? Shape{} : shape;
  Tensor values = Tensor::empty(out_shape, {t.dtype(), t.device()});
  Tensor indices = Tensor::empty(out_shape, {DType::i64, t.device()});
  sort_stub.get(t.device())(t1, dim, k, descending, values.reshape(shape), indices.reshape(shape));
  record(op, {t}, {values}, [in = t.shape(), in1 = t1.shape(), shape, dim, idx = indices.reshape(shape)](
                                const std::vector<Tensor>& g) {
    const Tensor z = zeros(in1, {g[0].dtype(), g[0].device()});
    return std::vector<Tensor>{scatter_add(z, dim, idx, g[0].reshape(shape)).reshape(in)};
  });
  return {values, indices};
}

// Inclusive cumulative sum along dim (reverse: from the end); its gradient is the
// cumulative sum in the other direction.
Tensor cumsum_dir(const Tensor& t, int64_t dim, bool reverse) {
  const DType dt = is_floating(t.dtype()) ? t.dtype() : DType::i64;  // integers and bool sum in i64
  const Tensor in = t.detach().to(dt).contiguous();
  const Tensor in1 = in.dim() == 0 ? in.reshape({1}) : in;
  Tensor out = Tensor::empty(t.shape(), {dt, t.device()});
  cumsum_stub.get(t.device())(in1, dim, reverse, t.dim() == 0 ? out.reshape({1}) : out);
  record("cumsum", {t}, {out}, [dim, reverse](const std::vector<Tensor>& g) {
    return std::vector<Tensor>{cumsum_dir(g[0], dim, !reverse)};
  });
  return out;
}

}  // namespace

std::pair<Tensor, Tensor> topk(const Tensor& t, int64_t k, int64_t dim, bool largest) {
  return ordered(t, dim, k, largest, "topk");
}

std::pair<Tensor, Tensor> sort(const Tensor& t, int64_t dim, bool descending) {
  HMOE_CHECK(t.defined(), "sort: input is undefined");
  const int64_t n = t.dim() == 0 ? 1 : t.size(wrap_dim(dim, t.dim(), "sort"));
  return ordered(t, dim, n, descending, "sort");
}

Tensor argsort(const Tensor& t, int64_t dim, bool descending) { return sort(t.detach(), dim, descending).second; }

Tensor cumsum(const Tensor& t, int64_t dim) {
  HMOE_CHECK(t.defined(), "cumsum: input is undefined");
  dim = wrap_dim(dim, t.dim(), "cumsum");
  return cumsum_dir(t, dim, false);
}

Tensor bincount(const Tensor& ids, int64_t minlength, const Tensor& weights) {
  HMOE_CHECK(ids.defined() && ids.dim() == 1 && (ids.dtype() == DType::i64 || ids.dtype() == DType::i32),
             "bincount: needs a 1-d i32/i64 tensor, got ", ids.defined() ? ids.meta_str() : "undefined");
  HMOE_CHECK(minlength >= 0, "bincount: minlength must be >= 0, got ", minlength);
  if (weights.defined()) {
    HMOE_CHECK(weights.shape() == ids.shape(), "bincount: weights ", weights.meta_str(), " do not match ids ",
               ids.meta_str());
    HMOE_CHECK(weights.dtype() != DType::b8, "bincount: weights must be numeric, got ", weights.meta_str());
    ops::common_device("bincount", {&ids, &weights});
  }
  int64_t len = minlength;
  if (ids.numel() > 0) {
    const int64_t lo = min(ids.detach()).item<int64_t>(), hi = max(ids.detach()).item<int64_t>();
    HMOE_CHECK(lo >= 0, "bincount: ids must be non-negative, got a negative value ", lo, " in ", ids.meta_str());
    len = std::max(len, hi + 1);
  }
  // Float weights keep their dtype; integer weights count in f64 (as PyTorch); no weights: i64 counts.
  const DType dt = !weights.defined() ? DType::i64 : is_floating(weights.dtype()) ? weights.dtype() : DType::f64;
  Tensor out = Tensor::empty({len}, {dt, ids.device()});
  bincount_stub.get(ids.device())(ids.detach(), weights.defined() ? weights.detach() : Tensor(), out);
  return out;
}

}  // namespace hmoe
