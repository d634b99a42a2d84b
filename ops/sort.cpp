// topk, stable sort/argsort, cumsum and bincount. Orders are computed per row on the
// host side of the CPU backend; values come from gather, so gradients flow through it.
#include "ops/sort.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "autograd/node.h"
#include "engine/thread_pool.h"
#include "ops/elementwise.h"
#include "ops/factory.h"
#include "ops/index.h"
#include "ops/reduce.h"

namespace hmoe {

namespace {
// Indices (i64, same shape as t) ordering each row along dim; NaN counts as the largest.
// take: how many of each row to keep (the first `take` of the order).
Tensor order_indices(const Tensor& t, int64_t dim, bool descending, int64_t take, const char* op) {
  HMOE_CHECK(t.device().is_cpu(), op, ": runs on the cpu only in this build");
  HMOE_CHECK(t.dtype() != DType::b8, op, ": not defined for bool tensors");
  const Tensor rows = t.detach().transpose(dim, -1).contiguous().to(DType::f64);
  const int64_t n = rows.dim() == 0 ? 1 : rows.size(-1), R = n ? rows.numel() / n : 0;
  Shape out_shape = rows.shape();
  if (!out_shape.empty()) out_shape.back() = take;
  Tensor idx = Tensor::empty(out_shape, {DType::i64});
  const double* x = rows.data_ptr<double>();
  int64_t* o = idx.data_ptr<int64_t>();
  parallel_for(R, 64, [&](int64_t b, int64_t e) {
    std::vector<int64_t> ord(static_cast<size_t>(n));
    for (int64_t r = b; r < e; ++r) {
      const double* row = x + r * n;
      std::iota(ord.begin(), ord.end(), 0);
      auto less = [&](int64_t i, int64_t j) {  // strict weak order, NaN largest
        const double a = row[i], c = row[j];
        if (std::isnan(a)) return false;
        if (std::isnan(c)) return true;
        return a < c;
      };
      auto cmp = [&](int64_t i, int64_t j) { return descending ? less(j, i) : less(i, j); };
      if (take < n) std::partial_sort(ord.begin(), ord.begin() + take, ord.end(), [&](int64_t i, int64_t j) {
          return cmp(i, j) || (!cmp(j, i) && i < j);  // ties: lower index first
        });
      else std::stable_sort(ord.begin(), ord.end(), cmp);
      std::copy(ord.begin(), ord.begin() + take, o + r * take);
    }
  });
  return idx.transpose(dim, -1).contiguous();
}
}  // namespace

std::pair<Tensor, Tensor> topk(const Tensor& t, int64_t k, int64_t dim, bool largest) {
  dim = wrap_dim(dim, t.dim(), "topk");
  const int64_t n = t.dim() == 0 ? 1 : t.size(dim);
  HMOE_CHECK(k >= 0 && k <= n, "topk: k = ", k, " is out of range [0, ", n, "] for ", t.meta_str());
  Tensor idx = order_indices(t, dim, largest, k, "topk");
  return {gather(t, dim, idx), idx};
}

std::pair<Tensor, Tensor> sort(const Tensor& t, int64_t dim, bool descending) {
  dim = wrap_dim(dim, t.dim(), "sort");
  Tensor idx = order_indices(t, dim, descending, t.dim() == 0 ? 1 : t.size(dim), "sort");
  return {gather(t, dim, idx), idx};
}

Tensor argsort(const Tensor& t, int64_t dim, bool descending) { return sort(t.detach(), dim, descending).second; }

Tensor cumsum(const Tensor& t, int64_t dim) {
  dim = wrap_dim(dim, t.dim(), "cumsum");
  HMOE_CHECK(t.device().is_cpu(), "cumsum: runs on the cpu only in this build");
  const DType dt = is_floating(t.dtype()) ? t.dtype() : DType::i64;
  const Tensor rows = t.detach().to(dt).transpose(dim, -1).contiguous();
  Tensor out = Tensor::empty(rows.shape(), {dt});
  const int64_t n = rows.dim() == 0 ? 1 : rows.size(-1), R = n ? rows.numel() / n : 0;
  detail::dispatch_numeric(dt, "cumsum", [&]<typename T>() {
    const T* x = rows.data_ptr<T>();
    T* y = out.data_ptr<T>();
    parallel_for(R, 64, [&](int64_t b, int64_t e) {
      for (int64_t r = b; r < e; ++r) {
        std::conditional_t<std::is_integral_v<T>, int64_t, double> acc = 0;
        for (int64_t i = 0; i < n; ++i) y[r * n + i] = T(compute_t<T>(acc += compute_t<T>(x[r * n + i])));
      }
    });
  });
  Tensor result = out.transpose(dim, -1).contiguous();
  autograd::record("cumsum", {t}, {result}, [dim](const std::vector<Tensor>& g) {
    // Reverse cumulative sum: total - prefix + own.
    const Tensor& go = g[0];
    return std::vector<Tensor>{sum(go, {dim}, true) - cumsum(go, dim) + go};
  });
  return result;
}

Tensor bincount(const Tensor& ids, int64_t minlength, const Tensor& weights) {
  HMOE_CHECK(ids.dim() == 1 && (ids.dtype() == DType::i64 || ids.dtype() == DType::i32),
             "bincount: needs a 1-d integer tensor, got ", ids.meta_str());
  HMOE_CHECK(minlength >= 0, "bincount: minlength must be >= 0");
  HMOE_CHECK(!weights.defined() || weights.shape() == ids.shape(), "bincount: weights ", weights.meta_str(),
             " do not match ids ", ids.meta_str());
  const std::vector<int64_t> v = ids.to(DType::i64).to_vector_as<int64_t>();
  int64_t len = minlength;
  for (int64_t x : v) {
    HMOE_CHECK(x >= 0, "bincount: negative value ", x);
    len = std::max(len, x + 1);
  }
  if (weights.defined()) {
    const std::vector<double> w = weights.to_vector();
    std::vector<double> acc(static_cast<size_t>(len), 0.0);
    for (size_t i = 0; i < v.size(); ++i) acc[size_t(v[i])] += w[i];
    return from_vector(acc, {len}, {is_floating(weights.dtype()) ? weights.dtype() : DType::f64});
  }
  std::vector<int64_t> acc(static_cast<size_t>(len), 0);
  for (int64_t x : v) ++acc[size_t(x)];
  return from_vector(acc, {len});
}

}  // namespace hmoe
