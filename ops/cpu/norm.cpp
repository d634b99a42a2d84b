// CPU kernels for layer_norm and rms_norm: fused forward (row statistics in f32, f64
// for f64) and fused backward, whose weight/bias reductions use fixed row chunks.
#include <algorithm>
#include <cmath>
#include <vector>

#include "ops/cpu/loops.h"
#include "ops/dispatch.h"
#include "ops/nn_kernels.h"

namespace hmoe::ops::cpu {
namespace {

constexpr int kL = 16;  // lanes per row sum (fixed: deterministic)

template <typename S, int N>
S lane_sum(const S (&p)[N]) {
  S q[N];
  for (int j = 0; j < N; ++j) q[j] = p[j];
  for (int w = N / 2; w >= 1; w /= 2)
    for (int j = 0; j < w; ++j) q[j] += q[j + w];
  return q[0];
}

// sum_j f(j) over [0, n) with kL lanes.
template <typename S, typename F>
S lanes(int64_t n, F&& f) {
  S part[kL] = {};
  int64_t r = 0;
  for (; r + kL <= n; r += kL)
    for (int j = 0; j < kL; ++j) part[j] += f(r + j);
  for (int j = 0; r < n; ++r, ++j) part[j] += f(r);
  return lane_sum(part);
}

// A row as compute-type values: the data itself, or converted into buf for half types.
template <typename T, typename C>
const C* as_compute(const T* p, int64_t n, std::vector<C>& buf) {
  if constexpr (std::is_same_v<T, C>) {
    (void)n;
    (void)buf;
    return p;
  } else {
    buf.resize(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) buf[size_t(i)] = C(p[i]);
    return buf.data();
  }
}

template <typename T>
void norm_forward_typed(const Tensor& xt, const Tensor& wt, const Tensor& bt, double eps, bool rms, const Tensor& yt,
                        const Tensor& mean_t, const Tensor& rstd_t) {
  using C = compute_t<T>;  // float or double; statistics in the same type
  const int64_t M = xt.size(0), D = xt.size(1);
  const T* x = xt.data_ptr<T>();
  T* y = yt.data_ptr<T>();
  C* mean = rms ? nullptr : mean_t.data_ptr<C>();
  C* rstd = rstd_t.data_ptr<C>();
  std::vector<C> wv(static_cast<size_t>(D)), bv(static_cast<size_t>(D), C(0));
  for (int64_t j = 0; j < D; ++j) wv[size_t(j)] = C(wt.data_ptr<T>()[j]);
  if (bt.defined())
    for (int64_t j = 0; j < D; ++j) bv[size_t(j)] = C(bt.data_ptr<T>()[j]);
  const C* w = wv.data();
  const C* bb = bv.data();
  const C inv_d = C(1) / C(D);
  parallel_for(M, std::max<int64_t>(1, kGrain / std::max<int64_t>(D, 1)), [&](int64_t b, int64_t e) {
    std::vector<C> buf;
    for (int64_t i = b; i < e; ++i) {
      const C* xr = as_compute(x + i * D, D, buf);
      T* yr = y + i * D;
      if (rms) {
        const C ms = lanes<C>(D, [&](int64_t j) { return xr[j] * xr[j]; }) * inv_d;
        const C rs = C(1) / std::sqrt(ms + C(eps));
        rstd[i] = rs;
        for (int64_t j = 0; j < D; ++j) yr[j] = T(xr[j] * rs * w[j]);
      } else {
        // Two passes over a row that sits in L1: stable where E[x^2] - E[x]^2 is not.
        const C mu = lanes<C>(D, [&](int64_t j) { return xr[j]; }) * inv_d;
        const C var = lanes<C>(D, [&](int64_t j) { return (xr[j] - mu) * (xr[j] - mu); }) * inv_d;
        const C rs = C(1) / std::sqrt(var + C(eps));
        mean[i] = mu;
        rstd[i] = rs;
        for (int64_t j = 0; j < D; ++j) yr[j] = T((xr[j] - mu) * rs * w[j] + bb[j]);
      }
    }
  });
}

void norm_forward_cpu(const Tensor& x, const Tensor& w, const Tensor& b, double eps, bool rms, const Tensor& y,
                      const Tensor& mean, const Tensor& rstd) {
  detail::dispatch_float(x.dtype(), rms ? "rms_norm" : "layer_norm",
                         [&]<typename T>() { norm_forward_typed<T>(x, w, b, eps, rms, y, mean, rstd); });
}

// Rows per chunk of the weight/bias reduction: a function of the shape only, so the
// partial sums and their order are the same for any thread count.
int64_t rows_per_chunk(int64_t M) { return std::max<int64_t>(16, (M + 63) / 64); }

template <typename T>
void norm_backward_typed(const Tensor& gt, const Tensor& xt, const Tensor& wt, const Tensor& mean_t,
                         const Tensor& rstd_t, bool rms, const Tensor& dxt, const Tensor& dwt, const Tensor& dbt) {
  using C = compute_t<T>;
  const int64_t M = xt.size(0), D = xt.size(1);
  const T* g = gt.data_ptr<T>();
  const T* x = xt.data_ptr<T>();
  const C* mean = rms ? nullptr : mean_t.data_ptr<C>();
  const C* rstd = rstd_t.data_ptr<C>();
  T* dx = dxt.defined() ? dxt.data_ptr<T>() : nullptr;
  const bool want_w = dwt.defined(), want_b = dbt.defined();
  std::vector<C> wv(static_cast<size_t>(D));
  for (int64_t j = 0; j < D; ++j) wv[size_t(j)] = C(wt.data_ptr<T>()[j]);
  const C* w = wv.data();
  const C inv_d = C(1) / C(D);

  const int64_t rows = rows_per_chunk(M);
  const int64_t nc = chunk_count(M, rows);
  // Per-chunk partials of dweight and dbias, in C; combined in chunk order below.
  std::vector<C> pw(want_w ? static_cast<size_t>(nc * D) : 0), pb(want_b ? static_cast<size_t>(nc * D) : 0);
  parallel_for(nc, std::max<int64_t>(1, kGrain / std::max<int64_t>(rows * D, 1)), [&](int64_t cb, int64_t ce) {
    std::vector<C> xbuf, gbuf, xhat(static_cast<size_t>(D));
    for (int64_t c = cb; c < ce; ++c) {
      C* aw = want_w ? pw.data() + c * D : nullptr;
      C* ab = want_b ? pb.data() + c * D : nullptr;
      if (aw) std::fill(aw, aw + D, C(0));
      if (ab) std::fill(ab, ab + D, C(0));
      for (int64_t i = c * rows; i < std::min(M, (c + 1) * rows); ++i) {
        const C* xr = as_compute(x + i * D, D, xbuf);
        const C* gr = as_compute(g + i * D, D, gbuf);
        const C rs = rstd[i];
        const C mu = rms ? C(0) : mean[i];
        C* xh = xhat.data();
        for (int64_t j = 0; j < D; ++j) xh[j] = (xr[j] - mu) * rs;
        if (aw)
          for (int64_t j = 0; j < D; ++j) aw[j] += gr[j] * xh[j];
        if (ab)
          for (int64_t j = 0; j < D; ++j) ab[j] += gr[j];
        if (!dx) continue;
        // dx = rstd * (g w - mean(g w) - xhat * mean(g w xhat)); RMS drops the mean(g w) term.
        const C a = rms ? C(0) : lanes<C>(D, [&](int64_t j) { return gr[j] * w[j]; }) * inv_d;
        const C bq = lanes<C>(D, [&](int64_t j) { return gr[j] * w[j] * xh[j]; }) * inv_d;
        T* dr = dx + i * D;
        for (int64_t j = 0; j < D; ++j) dr[j] = T(rs * (gr[j] * w[j] - a - xh[j] * bq));
      }
    }
  });
  // Chunk partials summed in chunk order (in double), one column at a time.
  auto finish = [&](const std::vector<C>& part, const Tensor& out) {
    T* o = out.data_ptr<T>();
    std::vector<double> acc(static_cast<size_t>(D), 0.0);
    for (int64_t c = 0; c < nc; ++c)
      for (int64_t j = 0; j < D; ++j) acc[size_t(j)] += double(part[size_t(c * D + j)]);
    for (int64_t j = 0; j < D; ++j) o[j] = T(C(acc[size_t(j)]));
  };
  if (want_w) finish(pw, dwt);
  if (want_b) finish(pb, dbt);
}

void norm_backward_cpu(const Tensor& g, const Tensor& x, const Tensor& w, const Tensor& mean, const Tensor& rstd,
                       bool rms, const Tensor& dx, const Tensor& dw, const Tensor& db) {
  detail::dispatch_float(x.dtype(), rms ? "rms_norm_backward" : "layer_norm_backward",
                         [&]<typename T>() { norm_backward_typed<T>(g, x, w, mean, rstd, rms, dx, dw, db); });
}

}  // namespace

void register_norm_cpu() {
  norm_stub.set(DeviceType::cpu, &norm_forward_cpu);
  norm_backward_stub.set(DeviceType::cpu, &norm_backward_cpu);
}

}  // namespace hmoe::ops::cpu
