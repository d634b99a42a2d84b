// Helpers for the index/join/sort tests: row-major index arithmetic for naive
// references, random integer index tensors, and a thread-count scope.
#pragma once

#include <cstdint>
#include <cstring>
#include <vector>

#include "tests/test_util.h"

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

// True when a and b hold the same bits (same dtype and shape).
inline bool bit_equal(const Tensor& a, const Tensor& b) {
  if (a.dtype() != b.dtype() || a.shape() != b.shape()) return false;
  const Tensor ca = a.contiguous(), cb = b.contiguous();
  return std::memcmp(ca.data_ptr<void>(), cb.data_ptr<void>(), ca.nbytes()) == 0;
}

}  // namespace hmoe::testing
