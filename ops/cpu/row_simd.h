// Row primitives with explicit fixed-width lanes (GCC/Clang vector extensions): the
// max/min/argmax scans that the auto-vectoriser leaves scalar. Lane layout depends on
// the row length only, so results never depend on threads.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>
#include <utility>

#include "engine/dtype.h"
#include "ops/cpu/fast_math.h"

namespace hmoe::ops::cpu {

// 64 bytes of C: 16 floats / 8 doubles. Vectors never cross a function boundary by
// value (their ABI depends on the target flags).
template <typename C>
struct VecOf {
  typedef C type __attribute__((vector_size(64)));
};
template <typename C>
using vec_t = typename VecOf<C>::type;
template <typename C>
inline constexpr int kVecW = int(64 / sizeof(C));

// The signed integer of C's width (lane masks and indices).
template <typename C>
using lane_int_t = std::conditional_t<sizeof(C) == 8, int64_t, int32_t>;

template <typename C, typename T>
inline void load_vec(vec_t<C>& v, const T* p) {
  if constexpr (std::is_same_v<C, T>) {
    std::memcpy(&v, p, sizeof v);
  } else {
    v = vec_t<C>{};  // lane stores are read-modify-writes of the whole vector
    for (int j = 0; j < kVecW<C>; ++j) v[j] = C(p[j]);
  }
}

template <typename C>
inline bool nan_(C v) {
  if constexpr (std::is_floating_point_v<C>) return v != v;
  else return false;
}

// The extreme (max if IsMax, else min) of x[0, n), n > 0, and the index of its first
// occurrence. NaN wins over every number (the first NaN is reported), as in PyTorch.
template <bool IsMax, typename C, typename T>
std::pair<C, int64_t> row_arg_extreme(const T* x, int64_t n) {
  using I = lane_int_t<C>;
  constexpr int W = kVecW<C>;
  auto better = [](C v, C cur) { return !nan_(cur) && (nan_(v) || (IsMax ? v > cur : v < cur)); };
  C best = C(x[0]);
  int64_t at = 0;
  int64_t r = 1;
  if (n >= 2 * W && n <= int64_t(std::numeric_limits<I>::max()) - W) {
    vec_t<C> m, a;
    typename VecOf<I>::type idx, pos;
    load_vec<C>(m, x);
    for (int j = 0; j < W; ++j) idx[j] = I(j);
    pos = idx + I(W);
    for (r = W; r + W <= n; r += W, pos += I(W)) {
      load_vec<C>(a, x + r);
      // Strictly better only, so each lane keeps its first occurrence.
      const auto take = (m == m) & ((a != a) | (IsMax ? a > m : a < m));
      m = take ? a : m;
      idx = take ? pos : idx;
    }
    best = m[0];
    at = int64_t(idx[0]);
    for (int j = 1; j < W; ++j) {
      const C v = m[j];
      const int64_t k = int64_t(idx[j]);
      // Across lanes: better value, or the same (or both NaN) at an earlier index.
      const bool same = v == best || (nan_(v) && nan_(best));
      if (better(v, best) || (same && k < at)) {
        best = v;
        at = k;
      }
    }
  }
  for (; r < n; ++r) {
    const C v = C(x[r]);
    if (better(v, best)) {
      best = v;
      at = r;
    }
  }
  return {best, at};
}

// 32 bytes of C (one AVX register: 8 floats / 4 doubles). GCC lowers these vectors
// more tightly than the 64-byte ones on targets that prefer 256-bit operations.
template <typename C>
struct Vec32Of {
  typedef C type __attribute__((vector_size(32)));
  typedef lane_int_t<C> mask __attribute__((vector_size(32)));
};

// The maximum of x[0, n) in C; NaN if any element is NaN; -inf for n == 0. Two vector
// accumulators plus NaN masks (a "greater or NaN" select does not vectorise as well),
// then the lanes; the maximum does not depend on the order.
template <typename C, typename T>
C row_max_value(const T* x, int64_t n) {
  using V = typename Vec32Of<C>::type;
  using M = typename Vec32Of<C>::mask;
  constexpr int W = int(32 / sizeof(C));
  if (n <= 0) return -std::numeric_limits<C>::infinity();
  C m = C(x[0]);
  bool any_nan = false;
  int64_t r = 0;
  if (n >= 2 * W) {
    auto load = [&](V& v, int64_t at) {
      if constexpr (std::is_same_v<C, T>) std::memcpy(&v, x + at, sizeof v);
      else
        for (int j = 0; j < W; ++j) v[j] = C(x[at + j]);
    };
    V a{}, b{}, u{}, w{};
    load(a, 0);
    load(b, W);
    M na = a != a, nb = b != b;
    for (r = 2 * W; r + 2 * W <= n; r += 2 * W) {
      load(u, r);
      load(w, r + W);
      a = u > a ? u : a;
      b = w > b ? w : b;
      na |= u != u;
      nb |= w != w;
    }
    a = b > a ? b : a;
    na |= nb;
    m = a[0];
    for (int j = 0; j < W; ++j) {
      m = a[j] > m ? a[j] : m;
      any_nan |= na[j] != 0;
    }
  }
  for (; r < n; ++r) {
    const C v = C(x[r]);
    m = v > m ? v : m;
    any_nan |= v != v;
  }
  return any_nan ? std::numeric_limits<C>::quiet_NaN() : m;
}

// exp(x) for arguments known to be <= 0 (x - max, x - logsumexp, a log-probability):
// only the underflow end needs a guard, which halves the work of fast_expf. NaN stays
// NaN; below -87.3 (under the smallest normal float) gives 0.
template <typename C>
inline C exp_nonpos(C x) {
  if constexpr (std::is_same_v<C, float>) {
    constexpr float lo = -87.33654f;
    const float y = expf_core(x < lo ? lo : x);
    return x < lo ? 0.0f : y;
  } else {
    return std::exp(x);
  }
}

}  // namespace hmoe::ops::cpu
