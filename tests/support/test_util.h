// Shared test helpers: random inputs (floats, integer ids, ties), closeness and bit
// equality checks, gradcheck and error-expectation macros, a thread-count scope.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <string>
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

// Random integers in [lo, hi) as i64 (or i32).
inline Tensor rand_ids(const Shape& shape, int64_t lo, int64_t hi, uint64_t seed, DType dt = DType::i64) {
  Generator g(seed);
  const Tensor u = uniform(shape, g, 0.0, 1.0, {DType::f64});
  std::vector<int64_t> v;
  for (double x : u.to_vector()) v.push_back(std::min(hi - 1, lo + int64_t(x * double(hi - lo))));
  return from_vector(v, shape).to(dt);
}

// Random values drawn from a few integers, so ties are common.
inline Tensor rand_ties(const Shape& shape, int levels, uint64_t seed, DType dt = DType::f64) {
  return rand_ids(shape, 0, levels, seed).to(dt);
}

// Sets the pool size for its scope, restoring the previous one.
class ThreadScope {
 public:
  explicit ThreadScope(int n) : prev_(num_threads()) { set_num_threads(n); }
  ~ThreadScope() { set_num_threads(prev_); }
  ThreadScope(const ThreadScope&) = delete;
  ThreadScope& operator=(const ThreadScope&) = delete;

 private:
  int prev_;
};

// True when a and b hold the same bits (same dtype and shape; either may be on a device).
inline bool bit_equal(const Tensor& a, const Tensor& b) {
  if (a.dtype() != b.dtype() || a.shape() != b.shape()) return false;
  const Tensor ca = a.to(Device::cpu()).contiguous(), cb = b.to(Device::cpu()).contiguous();
  return std::memcmp(ca.data_ptr<void>(), cb.data_ptr<void>(), ca.nbytes()) == 0;
}

// A dtype's name as a string, for failure messages.
inline std::string dn(DType dt) { return std::string(dtype_name(dt)); }

}  // namespace hmoe::testing
