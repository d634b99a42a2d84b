// Naive per-token references (in double) for the MoE op tests.
#pragma once

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "tests/support/test_util.h"

namespace hmoe::testing::moe_ref {

using Vec = std::vector<double>;

// The FFN activation op (relu, gelu erf / tanh, silu) as the unfused composite applies it.
inline Tensor ffn_activation(UnaryOp act, const Tensor& h) {
  return act == UnaryOp::relu ? relu(h) : act == UnaryOp::silu ? silu(h) : gelu(h, act == UnaryOp::gelu_tanh);
}

// A gather index into x_rows rows for the grouped GEMM tests: a fixed scramble with
// repeats, every 5th row -1 (a zero row).
inline std::vector<int64_t> gather_index(int64_t M, int64_t x_rows, uint64_t seed) {
  std::vector<int64_t> ix(static_cast<size_t>(M));
  for (int64_t r = 0; r < M; ++r)
    ix[size_t(r)] = (r + int64_t(seed)) % 5 == 0 ? -1 : int64_t((uint64_t(r) * 2654435761u + seed) % uint64_t(x_rows));
  return ix;
}

inline std::vector<int64_t> ints(const Tensor& t) {
  const auto v = t.to_vector();
  return std::vector<int64_t>(v.begin(), v.end());
}

// Softmax rows and top-k (best first, ties to the lower index) of logits [T, N].
struct Routed {
  Vec probs, gates;
  std::vector<int64_t> ids;
};
inline Routed route(const Vec& l, int64_t T, int64_t N, int64_t k, bool renorm) {
  Routed r;
  r.probs.resize(size_t(T * N));
  for (int64_t t = 0; t < T; ++t) {
    double m = -INFINITY, s = 0;
    for (int64_t i = 0; i < N; ++i) m = std::max(m, l[size_t(t * N + i)]);
    for (int64_t i = 0; i < N; ++i) s += std::exp(l[size_t(t * N + i)] - m);
    for (int64_t i = 0; i < N; ++i) r.probs[size_t(t * N + i)] = std::exp(l[size_t(t * N + i)] - m) / s;
    std::vector<int64_t> o(static_cast<size_t>(N));
    std::iota(o.begin(), o.end(), 0);
    const double* p = r.probs.data() + t * N;
    std::stable_sort(o.begin(), o.end(), [&](int64_t a, int64_t b) { return p[a] > p[b]; });
    double z = 0;
    for (int64_t j = 0; j < k; ++j) z += p[o[size_t(j)]];
    for (int64_t j = 0; j < k; ++j) {
      r.ids.push_back(o[size_t(j)]);
      r.gates.push_back(renorm ? p[o[size_t(j)]] / z : p[o[size_t(j)]]);
    }
  }
  return r;
}

// y [M, N] = scale[r] * (xrow(r) W_g + b_g) over row groups.
inline Vec grouped_gemm(const Vec& x, const Vec& w, const std::vector<int64_t>& off, const std::vector<int64_t>& idx,
                        const Vec& scale, const Vec& bias, int64_t K, int64_t N) {
  const int64_t G = int64_t(off.size()) - 1, M = off.back();
  Vec y(size_t(M * N), 0.0);
  for (int64_t g = 0; g < G; ++g)
    for (int64_t r = off[size_t(g)]; r < off[size_t(g) + 1]; ++r) {
      const int64_t src = idx.empty() ? r : idx[size_t(r)];
      for (int64_t n = 0; n < N; ++n) {
        double acc = bias.empty() ? 0.0 : bias[size_t(g * N + n)];
        if (src >= 0)
          for (int64_t c = 0; c < K; ++c) acc += x[size_t(src * K + c)] * w[size_t((g * K + c) * N + n)];
        y[size_t(r * N + n)] = (scale.empty() ? 1.0 : scale[size_t(r)]) * acc;
      }
    }
  return y;
}

inline double normal_cdf(double x) { return 0.5 * std::erfc(-x / std::sqrt(2.0)); }

}  // namespace hmoe::testing::moe_ref
