// Shared test helpers: random inputs, closeness checks, gradcheck wrappers.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <vector>

#include "hmoe.h"

namespace hmoe::testing {

inline Tensor rand_t(const Shape& shape, uint64_t seed, double lo = -1, double hi = 1, DType dt = DType::f64,
                     bool requires_grad = false) {
  Generator g(seed);
  Tensor t = uniform(shape, g, lo, hi, {dt});
  if (requires_grad) t.set_requires_grad(true);
  return t;
}

inline Tensor randn_t(const Shape& shape, uint64_t seed, DType dt = DType::f64, bool requires_grad = false) {
  Generator g(seed);
  Tensor t = normal(shape, g, 0, 1, {dt});
  if (requires_grad) t.set_requires_grad(true);
  return t;
}

// Max |a - b| over all elements; shapes must match.
inline double max_abs_diff(const Tensor& a, const Tensor& b) {
  EXPECT_EQ(shape_str(a.shape()), shape_str(b.shape()));
  const auto va = a.to_vector(), vb = b.to_vector();
  double m = 0;
  for (size_t i = 0; i < va.size() && i < vb.size(); ++i) {
    if (std::isnan(va[i]) != std::isnan(vb[i])) return INFINITY;
    if (!std::isnan(va[i])) m = std::max(m, std::abs(va[i] - vb[i]));
  }
  return m;
}

inline void expect_close(const Tensor& a, const Tensor& b, double tol = 1e-9) {
  const double d = max_abs_diff(a, b);
  EXPECT_LE(d, tol) << "got " << a.str() << "\nexpected " << b.str();
}

inline void expect_close(const Tensor& a, const std::vector<double>& b, double tol = 1e-9) {
  const auto va = a.to_vector();
  ASSERT_EQ(va.size(), b.size());
  for (size_t i = 0; i < va.size(); ++i) EXPECT_NEAR(va[i], b[i], tol) << "at " << i << " of " << a.str();
}

#define EXPECT_GRADCHECK(fn, inputs)                                  \
  do {                                                                \
    auto _r = ::hmoe::autograd::gradcheck((fn), (inputs));            \
    EXPECT_TRUE(_r.ok) << _r.message;                                 \
  } while (0)

#define EXPECT_HMOE_ERROR(stmt, substr)                                                        \
  do {                                                                                         \
    try {                                                                                      \
      (void)(stmt);                                                                            \
      ADD_FAILURE() << "expected hmoe::Error containing '" << (substr) << "'";                 \
    } catch (const ::hmoe::Error& e) {                                                         \
      EXPECT_NE(std::string(e.what()).find(substr), std::string::npos) << "message: " << e.what(); \
    }                                                                                          \
  } while (0)

}  // namespace hmoe::testing
