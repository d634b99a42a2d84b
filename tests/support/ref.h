// Naive references for the op tests: row-major index arithmetic, and loops in double
// over the logical (row-major) elements of a tensor, whatever its strides.
#pragma once

#include <functional>
#include <vector>

#include "tests/support/test_util.h"

namespace hmoe::testing {

inline Shape unravel(int64_t flat, const Shape& shape) {
  Shape at(shape.size(), 0);
  for (size_t d = shape.size(); d-- > 0;) {
    at[d] = flat % shape[d];
    flat /= shape[d];
  }
  return at;
}

inline int64_t ravel(const Shape& at, const Shape& shape) {
  int64_t flat = 0;
  for (size_t d = 0; d < shape.size(); ++d) flat = flat * shape[d] + at[d];
  return flat;
}

// For every output position of reducing `dims` of x (row-major over the kept dims),
// the reduced values in row-major order of the reduced dims; fills out_shape.
inline std::vector<std::vector<double>> reduce_groups(const Tensor& x, std::vector<int64_t> dims, bool keepdim,
                                                      Shape& out_shape) {
  const int64_t r = x.dim();
  std::vector<bool> red(static_cast<size_t>(r), false);
  for (auto& d : dims) red[size_t(d < 0 ? d + r : d)] = true;
  out_shape.clear();
  Shape kept;  // sizes of the kept dims
  for (int64_t d = 0; d < r; ++d) {
    if (!red[size_t(d)]) kept.push_back(x.size(d));
    if (!red[size_t(d)]) out_shape.push_back(x.size(d));
    else if (keepdim) out_shape.push_back(1);
  }
  const auto v = x.to_vector();
  std::vector<std::vector<double>> groups(static_cast<size_t>(shape_numel(kept)));
  std::vector<int64_t> idx(static_cast<size_t>(r), 0);
  for (size_t flat = 0; flat < v.size(); ++flat) {
    int64_t o = 0;
    for (int64_t d = 0; d < r; ++d)
      if (!red[size_t(d)]) o = o * x.size(d) + idx[size_t(d)];
    groups[size_t(o)].push_back(v[flat]);
    for (int64_t d = r - 1; d >= 0; --d) {
      if (++idx[size_t(d)] < x.size(d)) break;
      idx[size_t(d)] = 0;
    }
  }
  return groups;
}

inline std::vector<double> naive_reduce(const Tensor& x, const std::vector<int64_t>& dims, bool keepdim,
                                        const std::function<double(const std::vector<double>&)>& fn,
                                        Shape& out_shape) {
  std::vector<double> out;
  for (const auto& g : reduce_groups(x, dims, keepdim, out_shape)) out.push_back(fn(g));
  return out;
}

// Compares a tensor with expected values and shape, relative-plus-absolute tolerance.
inline void expect_values(const Tensor& got, const Shape& shape, const std::vector<double>& want, double tol) {
  ASSERT_EQ(shape_str(got.shape()), shape_str(shape));
  const auto g = got.to_vector();
  ASSERT_EQ(g.size(), want.size());
  for (size_t i = 0; i < g.size(); ++i) {
    if (std::isnan(want[i])) {
      EXPECT_TRUE(std::isnan(g[i])) << "at " << i;
    } else if (std::isinf(want[i])) {
      EXPECT_EQ(g[i], want[i]) << "at " << i;
    } else {
      EXPECT_NEAR(g[i], want[i], tol * (1 + std::abs(want[i]))) << "at " << i;
    }
  }
}

// Bitwise equality of two tensors' values.
inline void expect_identical(const Tensor& a, const Tensor& b) {
  ASSERT_EQ(shape_str(a.shape()), shape_str(b.shape()));
  const auto va = a.to_vector(), vb = b.to_vector();
  for (size_t i = 0; i < va.size(); ++i)
    EXPECT_TRUE(va[i] == vb[i] || (std::isnan(va[i]) && std::isnan(vb[i]))) << "at " << i << ": " << va[i] << " vs " << vb[i];
}

}  // namespace hmoe::testing
