// CPU kernels for softmax / log_softmax (forward and backward) and the fused
// cross-entropy loss and its gradient. Rows are reduced with fixed lanes.
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "ops/cpu/fast_math.h"
#include "ops/cpu/loops.h"
#include "ops/cpu/row_simd.h"
#include "ops/dispatch.h"
#include "ops/nn_kernels.h"

namespace hmoe::ops::cpu {
namespace {

constexpr int kL = 16;           // lanes per row reduction (fixed: deterministic)
constexpr int64_t kCols = 256;   // inner columns per task when reducing a non-last dim

template <typename C, int N>
C lane_sum(const C (&p)[N]) {
  C q[N];
  for (int j = 0; j < N; ++j) q[j] = p[j];
  for (int w = N / 2; w >= 1; w /= 2)
    for (int j = 0; j < w; ++j) q[j] += q[j + w];
  return q[0];
}

// sum_j exp(x_j - m); also stores the exponentials into e when it is non-null.
template <typename C, typename T>
C row_exp_sum(const T* x, int64_t n, C m, C* e) {
  C part[kL] = {};
  int64_t r = 0;
  if (e) {
    for (; r + kL <= n; r += kL)
      for (int j = 0; j < kL; ++j) {
        const C v = exp_nonpos<C>(C(x[r + j]) - m);
        e[r + j] = v;
        part[j] += v;
      }
    for (int j = 0; r < n; ++r, ++j) {
      e[r] = exp_nonpos<C>(C(x[r]) - m);
      part[j] += e[r];
    }
  } else {
    for (; r + kL <= n; r += kL)
      for (int j = 0; j < kL; ++j) part[j] += exp_nonpos<C>(C(x[r + j]) - m);
    for (int j = 0; r < n; ++r, ++j) part[j] += exp_nonpos<C>(C(x[r]) - m);
  }
  return lane_sum(part);
}

// ---- softmax forward -------------------------------------------------------------

template <typename T>
void softmax_row(const T* x, T* y, int64_t n, bool log, std::vector<compute_t<T>>& buf) {
  using C = compute_t<T>;
  const C m = row_max_value<C>(x, n);
  if (log) {
    const C s = row_exp_sum<C>(x, n, m, nullptr);
    const C shift = m + std::log(s);
    for (int64_t r = 0; r < n; ++r) y[r] = T(C(x[r]) - shift);
    return;
  }
  C* e;
  if constexpr (std::is_same_v<T, C>) {
    e = y;  // exponentials go straight into the output, then get scaled in place
  } else {
    buf.resize(static_cast<size_t>(n));
    e = buf.data();
  }
  const C inv = C(1) / row_exp_sum<C>(x, n, m, e);
  for (int64_t r = 0; r < n; ++r) y[r] = T(e[r] * inv);
}

// One [n, w] column block with row stride `inner`.
template <typename T>
void softmax_cols(const T* x, T* y, int64_t n, int64_t inner, int64_t w, bool log) {
  using C = compute_t<T>;
  C m[kCols], s[kCols] = {};
  for (int64_t i = 0; i < w; ++i) m[i] = -std::numeric_limits<C>::infinity();
  for (int64_t r = 0; r < n; ++r)
    for (int64_t i = 0; i < w; ++i) m[i] = std::max(m[i], C(x[r * inner + i]));
  for (int64_t r = 0; r < n; ++r)
    for (int64_t i = 0; i < w; ++i) s[i] += exp_nonpos<C>(C(x[r * inner + i]) - m[i]);
  if (log) {
    for (int64_t i = 0; i < w; ++i) m[i] += std::log(s[i]);
    for (int64_t r = 0; r < n; ++r)
      for (int64_t i = 0; i < w; ++i) y[r * inner + i] = T(C(x[r * inner + i]) - m[i]);
  } else {
    for (int64_t i = 0; i < w; ++i) s[i] = C(1) / s[i];
    for (int64_t r = 0; r < n; ++r)
      for (int64_t i = 0; i < w; ++i) y[r * inner + i] = T(exp_nonpos<C>(C(x[r * inner + i]) - m[i]) * s[i]);
  }
}

template <typename T>
void softmax_typed(const Tensor& xt, const Tensor& yt, int64_t outer, int64_t n, int64_t inner, bool log) {
  const T* x = xt.data_ptr<T>();
  T* y = yt.data_ptr<T>();
  if (inner == 1) {
    parallel_for(outer, std::max<int64_t>(1, kGrain / std::max<int64_t>(n, 1)), [&](int64_t b, int64_t e) {
      std::vector<compute_t<T>> buf;
      for (int64_t o = b; o < e; ++o) softmax_row(x + o * n, y + o * n, n, log, buf);
    });
    return;
  }
  const int64_t nb = chunk_count(inner, kCols);
  parallel_for(outer * nb, std::max<int64_t>(1, kGrain / std::max<int64_t>(n * std::min(inner, kCols), 1)),
               [&](int64_t b, int64_t e) {
                 for (int64_t t = b; t < e; ++t) {
                   const int64_t o = t / nb, i0 = (t % nb) * kCols;
                   const int64_t off = o * n * inner + i0;
                   softmax_cols(x + off, y + off, n, inner, std::min(kCols, inner - i0), log);
                 }
               });
}

void softmax_cpu(const Tensor& x, const Tensor& y, int64_t outer, int64_t n, int64_t inner, bool log) {
  detail::dispatch_float(x.dtype(), log ? "log_softmax" : "softmax",
                         [&]<typename T>() { softmax_typed<T>(x, y, outer, n, inner, log); });
}

// ---- softmax backward ------------------------------------------------------------

template <typename T>
void softmax_backward_row(const T* y, const T* g, T* gx, int64_t n, bool log) {
  using C = compute_t<T>;
  C part[kL] = {};
  int64_t r = 0;
  if (log) {  // gx = g - exp(y) * sum(g)
    for (; r + kL <= n; r += kL)
      for (int j = 0; j < kL; ++j) part[j] += C(g[r + j]);
    for (int j = 0; r < n; ++r, ++j) part[j] += C(g[r]);
    const C s = lane_sum(part);
    for (r = 0; r < n; ++r) gx[r] = T(C(g[r]) - exp_nonpos<C>(C(y[r])) * s);
  } else {  // gx = y * (g - sum(g * y))
    for (; r + kL <= n; r += kL)
      for (int j = 0; j < kL; ++j) part[j] += C(g[r + j]) * C(y[r + j]);
    for (int j = 0; r < n; ++r, ++j) part[j] += C(g[r]) * C(y[r]);
    const C s = lane_sum(part);
    for (r = 0; r < n; ++r) gx[r] = T(C(y[r]) * (C(g[r]) - s));
  }
}

template <typename T>
void softmax_backward_cols(const T* y, const T* g, T* gx, int64_t n, int64_t inner, int64_t w, bool log) {
  using C = compute_t<T>;
  C s[kCols] = {};
  for (int64_t r = 0; r < n; ++r)
    for (int64_t i = 0; i < w; ++i) s[i] += log ? C(g[r * inner + i]) : C(g[r * inner + i]) * C(y[r * inner + i]);
  for (int64_t r = 0; r < n; ++r)
    for (int64_t i = 0; i < w; ++i) {
      const int64_t k = r * inner + i;
      gx[k] = log ? T(C(g[k]) - exp_nonpos<C>(C(y[k])) * s[i]) : T(C(y[k]) * (C(g[k]) - s[i]));
    }
}

template <typename T>
void softmax_backward_typed(const Tensor& yt, const Tensor& gt, const Tensor& gxt, int64_t outer, int64_t n,
                            int64_t inner, bool log) {
  const T* y = yt.data_ptr<T>();
  const T* g = gt.data_ptr<T>();
  T* gx = gxt.data_ptr<T>();
  if (inner == 1) {
    parallel_for(outer, std::max<int64_t>(1, kGrain / std::max<int64_t>(n, 1)), [&](int64_t b, int64_t e) {
      for (int64_t o = b; o < e; ++o) softmax_backward_row(y + o * n, g + o * n, gx + o * n, n, log);
    });
    return;
  }
  const int64_t nb = chunk_count(inner, kCols);
  parallel_for(outer * nb, std::max<int64_t>(1, kGrain / std::max<int64_t>(n * std::min(inner, kCols), 1)),
               [&](int64_t b, int64_t e) {
                 for (int64_t t = b; t < e; ++t) {
                   const int64_t o = t / nb, i0 = (t % nb) * kCols;
                   const int64_t off = o * n * inner + i0;
                   softmax_backward_cols(y + off, g + off, gx + off, n, inner, std::min(kCols, inner - i0), log);
                 }
               });
}

void softmax_backward_cpu(const Tensor& y, const Tensor& g, const Tensor& gx, int64_t outer, int64_t n,
                          int64_t inner, bool log) {
  detail::dispatch_float(y.dtype(), log ? "log_softmax_backward" : "softmax_backward",
                         [&]<typename T>() { softmax_backward_typed<T>(y, g, gx, outer, n, inner, log); });
}

// ---- cross entropy ----------------------------------------------------------------

// Targets as i64, whatever their stored index type.
template <typename I>
int64_t target_at(const void* p, int64_t i) {
  return int64_t(static_cast<const I*>(p)[i]);
}
using TargetFn = int64_t (*)(const void*, int64_t);

TargetFn target_reader(const Tensor& targets) {
  return detail::dispatch_index(targets.dtype(), "cross_entropy",
                                [&]<typename I>() -> TargetFn { return &target_at<I>; });
}

template <typename T>
void cross_entropy_typed(const Tensor& logits, const void* tg, TargetFn at, int64_t ignore, const Tensor& loss_t,
                         const Tensor& lse_t) {
  using C = compute_t<T>;
  using S = std::conditional_t<std::is_same_v<T, double>, double, float>;
  const int64_t N = logits.size(0), Cn = logits.size(1);
  const T* x = logits.data_ptr<T>();
  S* loss = loss_t.data_ptr<S>();
  S* lse = lse_t.data_ptr<S>();
  parallel_for(N, std::max<int64_t>(1, kGrain / std::max<int64_t>(Cn, 1)), [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      const int64_t t = at(tg, i);
      if (t == ignore) {
        loss[i] = lse[i] = S(0);
        continue;
      }
      const T* row = x + i * Cn;
      const C m = row_max_value<C>(row, Cn);
      const C l = std::isfinite(m) ? m + std::log(row_exp_sum<C>(row, Cn, m, nullptr)) : m;
      lse[i] = S(l);
      loss[i] = S(l - C(row[t]));
    }
  });
}

int64_t cross_entropy_cpu(const Tensor& logits, const Tensor& targets, int64_t ignore_index, const Tensor& loss,
                          const Tensor& lse) {
  const int64_t N = logits.size(0), Cn = logits.size(1);
  const void* tg = targets.data_ptr<void>();
  const TargetFn at = target_reader(targets);
  // Validate first, serially, so the error names the first bad row whatever the threads.
  int64_t count = 0;
  for (int64_t i = 0; i < N; ++i) {
    const int64_t t = at(tg, i);
    if (t == ignore_index) continue;
    HMOE_CHECK(t >= 0 && t < Cn, "cross_entropy: target ", t, " at row ", i, " is out of range [0, ", Cn,
               ") for logits ", logits.meta_str(), " (ignore_index is ", ignore_index, ")");
    ++count;
  }
  detail::dispatch_float(logits.dtype(), "cross_entropy",
                         [&]<typename T>() { cross_entropy_typed<T>(logits, tg, at, ignore_index, loss, lse); });
  return count;
}

template <typename T>
void cross_entropy_backward_typed(const Tensor& logits, const void* tg, TargetFn at, int64_t ignore,
                                  const Tensor& lse_t, const Tensor& g_t, double scale, const Tensor& gx_t) {
  using C = compute_t<T>;
  using S = std::conditional_t<std::is_same_v<T, double>, double, float>;
  const int64_t N = logits.size(0), Cn = logits.size(1);
  const T* x = logits.data_ptr<T>();
  const S* lse = lse_t.data_ptr<S>();
  const S* g = g_t.data_ptr<S>();
  const bool per_row = g_t.numel() == N && N != 1;
  T* gx = gx_t.data_ptr<T>();
  parallel_for(N, std::max<int64_t>(1, kGrain / std::max<int64_t>(Cn, 1)), [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      T* out = gx + i * Cn;
      const int64_t t = at(tg, i);
      if (t == ignore) {
        std::fill(out, out + Cn, T(C(0)));
        continue;
      }
      const C w = C(double(g[per_row ? i : 0]) * scale);
      const C l = C(lse[i]);
      const T* row = x + i * Cn;
      for (int64_t c = 0; c < Cn; ++c) out[c] = T(exp_nonpos<C>(C(row[c]) - l) * w);
      out[t] = T((exp_nonpos<C>(C(row[t]) - l) - C(1)) * w);
    }
  });
}

void cross_entropy_backward_cpu(const Tensor& logits, const Tensor& targets, int64_t ignore_index, const Tensor& lse,
                                const Tensor& g, double scale, const Tensor& gx) {
  const void* tg = targets.data_ptr<void>();
  const TargetFn at = target_reader(targets);
  detail::dispatch_float(logits.dtype(), "cross_entropy_backward", [&]<typename T>() {
    cross_entropy_backward_typed<T>(logits, tg, at, ignore_index, lse, g, scale, gx);
  });
}

}  // namespace

void register_softmax_cpu() {
  softmax_stub.set(DeviceType::cpu, &softmax_cpu);
  softmax_backward_stub.set(DeviceType::cpu, &softmax_backward_cpu);
  cross_entropy_stub.set(DeviceType::cpu, &cross_entropy_cpu);
  cross_entropy_backward_stub.set(DeviceType::cpu, &cross_entropy_backward_cpu);
}

}  // namespace hmoe::ops::cpu
