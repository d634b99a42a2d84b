// CPU kernels of the router: fused softmax + top-k + gates, its backward, dense gates
// (scatter / gather per token) and the smooth load with its gradient.
#include <algorithm>
#include <cmath>
#include <numbers>
#include <vector>

#include "ops/moe/cpu/moe_cpu.h"
#include "ops/moe/moe_kernels.h"

namespace hmoe::ops::cpu {
namespace {

using namespace moe_detail;

// Indices of the k best values of v[0, n), best first, ties to the lower index.
template <typename T>
void topk_row(const T* v, int64_t n, int64_t k, std::vector<int64_t>& order) {
  order.resize(size_t(n));
  for (int64_t i = 0; i < n; ++i) order[size_t(i)] = i;
  std::partial_sort(order.begin(), order.begin() + k, order.end(),
                    [v](int64_t a, int64_t b) { return v[a] > v[b] || (v[a] == v[b] && a < b); });
}

void router_topk_cpu(const Tensor& logits, int64_t k, bool renorm, const Tensor& probs, const Tensor& ids,
                     const Tensor& gates) {
  const int64_t T = logits.size(0), N = logits.size(1);
  hmoe::detail::dispatch_real(logits.dtype(), "route_topk", [&]<typename T_>() {
    const T_* l = logits.data_ptr<T_>();
    T_* p = probs.data_ptr<T_>();
    T_* g = gates.data_ptr<T_>();
    int32_t* id = ids.data_ptr<int32_t>();
    parallel_for(T, row_grain(N, 4096), [&](int64_t b, int64_t e) {
      std::vector<int64_t> order;
      for (int64_t t = b; t < e; ++t) {
        const T_* lr = l + t * N;
        T_* pr = p + t * N;
        T_ m = lr[0];
        for (int64_t i = 0; i < N; ++i) {
          HMOE_CHECK(!std::isnan(lr[i]), "route_topk: logits contain NaN (token ", t, ", expert ", i, ")");
          m = std::max(m, lr[i]);
        }
        T_ s = 0;
        for (int64_t i = 0; i < N; ++i) s += (pr[i] = std::exp(lr[i] - m));
        const T_ inv = T_(1) / s;
        for (int64_t i = 0; i < N; ++i) pr[i] *= inv;
        topk_row(pr, N, k, order);
        T_ z = 0;
        for (int64_t j = 0; j < k; ++j) z += pr[order[size_t(j)]];
        for (int64_t j = 0; j < k; ++j) {
          id[t * k + j] = int32_t(order[size_t(j)]);
          g[t * k + j] = renorm ? pr[order[size_t(j)]] / z : pr[order[size_t(j)]];
        }
      }
    });
  });
}

void router_backward_cpu(const Tensor& probs, const Tensor& ids, const Tensor& gates, bool renorm,
                         const Tensor& dgates, const Tensor& dprobs, const Tensor& dlogits) {
  const int64_t T = probs.size(0), N = probs.size(1), k = gates.size(1);
  hmoe::detail::dispatch_real(probs.dtype(), "route_topk backward", [&]<typename T_>() {
    const T_* p = probs.data_ptr<T_>();
    const T_* g = gates.data_ptr<T_>();
    const T_* dg = opt_ptr<T_>(dgates);
    const T_* dp = opt_ptr<T_>(dprobs);
    const int32_t* id = ids.data_ptr<int32_t>();
    T_* dl = dlogits.data_ptr<T_>();
    parallel_for(T, row_grain(N, 4096), [&](int64_t b, int64_t e) {
      for (int64_t t = b; t < e; ++t) {
        const T_* pr = p + t * N;
        T_* out = dl + t * N;
        // Softmax Jacobian applied to dprobs, plus (without renormalisation) to the
        // gates, which are entries of p: dl = p * (dp_eff - <dp_eff, p>).
        T_ c = 0;
        if (dp)
          for (int64_t i = 0; i < N; ++i) c += dp[t * N + i] * pr[i];
        for (int64_t i = 0; i < N; ++i) out[i] = dp ? pr[i] * (dp[t * N + i] - c) : T_(0);
        if (!dg) continue;
        T_ cg = 0;
        for (int64_t j = 0; j < k; ++j) cg += dg[t * k + j] * g[t * k + j];
        if (renorm) {
          // Renormalised gates are a softmax over the selected logits only.
          for (int64_t j = 0; j < k; ++j) out[id[t * k + j]] += g[t * k + j] * (dg[t * k + j] - cg);
        } else {
          for (int64_t i = 0; i < N; ++i) out[i] -= pr[i] * cg;
          for (int64_t j = 0; j < k; ++j) out[id[t * k + j]] += pr[id[t * k + j]] * dg[t * k + j];
        }
      }
    });
  });
}

void scatter_gates_cpu(const Tensor& values, const Tensor& ids, const Tensor& out) {
  const int64_t T = out.size(0), N = out.size(1), k = values.size(1);
  hmoe::detail::dispatch_real(values.dtype(), "dense_gates", [&]<typename T_>() {
    hmoe::detail::dispatch_index(ids.dtype(), "dense_gates", [&]<typename I>() {
      const T_* v = values.data_ptr<T_>();
      const I* id = ids.data_ptr<I>();
      T_* o = out.data_ptr<T_>();
      for (int64_t i = 0; i < T * k; ++i)
        HMOE_CHECK(id[i] >= 0 && id[i] < N, "dense_gates: expert id ", int64_t(id[i]), " at position ", i,
                   " is out of range [0, ", N, ")");
      parallel_for(T, row_grain(N), [&](int64_t b, int64_t e) {
        for (int64_t t = b; t < e; ++t) {
          std::fill(o + t * N, o + (t + 1) * N, T_(0));
          for (int64_t j = 0; j < k; ++j) o[t * N + id[t * k + j]] += v[t * k + j];
        }
      });
    });
  });
}

void gather_gates_cpu(const Tensor& dense, const Tensor& ids, const Tensor& out) {
  const int64_t T = out.size(0), k = out.size(1), N = dense.size(1);
  hmoe::detail::dispatch_real(dense.dtype(), "dense_gates backward", [&]<typename T_>() {
    hmoe::detail::dispatch_index(ids.dtype(), "dense_gates backward", [&]<typename I>() {
      const T_* d = dense.data_ptr<T_>();
      const I* id = ids.data_ptr<I>();
      T_* o = out.data_ptr<T_>();
      for (int64_t i = 0; i < T * k; ++i) o[i] = d[(i / k) * N + id[i]];
    });
  });
}

// Per token: the selected set (top-k of the noisy logits), the best unselected value
// (threshold for selected experts) and the worst selected one (for the others).
template <typename T_>
struct Thresholds {
  int64_t in_idx = -1, out_idx = -1;  // where thr_in / thr_out come from
  std::vector<char> selected;
};

template <typename T_>
void thresholds_row(const T_* z, int64_t N, int64_t k, std::vector<int64_t>& order, Thresholds<T_>& th) {
  topk_row(z, N, std::min(k + 1, N), order);  // the (k+1)-th is the best unselected
  th.selected.assign(size_t(N), 0);
  for (int64_t j = 0; j < k; ++j) th.selected[size_t(order[size_t(j)])] = 1;
  th.out_idx = order[size_t(k - 1)];
  th.in_idx = k < N ? order[size_t(k)] : -1;
}

template <typename T_>
T_ normal_cdf(T_ x) { return T_(0.5) * std::erfc(-x / std::numbers::sqrt2_v<T_>); }
template <typename T_>
T_ normal_pdf(T_ x) { return std::exp(T_(-0.5) * x * x) / std::sqrt(T_(2) * std::numbers::pi_v<T_>); }

void smooth_load_cpu(const Tensor& clean, const Tensor& noisy, const Tensor& sd, int64_t k, const Tensor& load) {
  const int64_t T = clean.size(0), N = clean.size(1);
  hmoe::detail::dispatch_real(clean.dtype(), "smooth_load", [&]<typename T_>() {
    const T_* c = clean.data_ptr<T_>();
    const T_* z = noisy.data_ptr<T_>();
    const T_* s = sd.data_ptr<T_>();
    T_* out = load.data_ptr<T_>();
    std::vector<T_> prob(size_t(T * N), T_(1));
    if (k < N) {
      parallel_for(T, row_grain(N, 2048), [&](int64_t b, int64_t e) {
        std::vector<int64_t> order;
        Thresholds<T_> th;
        for (int64_t t = b; t < e; ++t) {
          thresholds_row(z + t * N, N, k, order, th);
          for (int64_t i = 0; i < N; ++i) {
            const T_ thr = z[t * N + (th.selected[size_t(i)] ? th.in_idx : th.out_idx)];
            prob[size_t(t * N + i)] = normal_cdf((c[t * N + i] - thr) / s[t * N + i]);
          }
        }
      });
    }
    for (int64_t i = 0; i < N; ++i) {  // token order: deterministic
      T_ acc = 0;
      for (int64_t t = 0; t < T; ++t) acc += prob[size_t(t * N + i)];
      out[i] = acc;
    }
  });
}

void smooth_load_backward_cpu(const Tensor& clean, const Tensor& noisy, const Tensor& sd, int64_t k,
                              const Tensor& dload, const Tensor& dclean, const Tensor& dnoisy, const Tensor& dstd) {
  const int64_t T = clean.size(0), N = clean.size(1);
  hmoe::detail::dispatch_real(clean.dtype(), "smooth_load backward", [&]<typename T_>() {
    const T_* c = clean.data_ptr<T_>();
    const T_* z = noisy.data_ptr<T_>();
    const T_* s = sd.data_ptr<T_>();
    const T_* dl = dload.data_ptr<T_>();
    T_* dc = dclean.data_ptr<T_>();
    T_* dz = dnoisy.data_ptr<T_>();
    T_* ds = dstd.data_ptr<T_>();
    std::fill(dc, dc + T * N, T_(0));
    std::fill(dz, dz + T * N, T_(0));
    std::fill(ds, ds + T * N, T_(0));
    if (k >= N) return;  // every expert always selected: constant load
    parallel_for(T, row_grain(N, 2048), [&](int64_t b, int64_t e) {
      std::vector<int64_t> order;
      Thresholds<T_> th;
      for (int64_t t = b; t < e; ++t) {
        thresholds_row(z + t * N, N, k, order, th);
        for (int64_t i = 0; i < N; ++i) {
          const int64_t src = th.selected[size_t(i)] ? th.in_idx : th.out_idx;
          const T_ si = s[t * N + i], u = (c[t * N + i] - z[t * N + src]) / si;
          const T_ gp = dl[i] * normal_pdf(u) / si;  // d load_i / d clean_ti
          dc[t * N + i] += gp;
          dz[t * N + src] -= gp;
          ds[t * N + i] -= gp * u;
        }
      }
    });
  });
}

}  // namespace

void register_moe_router_cpu() {
  using namespace hmoe::moe;
  router_topk_stub.set(DeviceType::cpu, &router_topk_cpu);
  router_backward_stub.set(DeviceType::cpu, &router_backward_cpu);
  scatter_gates_stub.set(DeviceType::cpu, &scatter_gates_cpu);
  gather_gates_stub.set(DeviceType::cpu, &gather_gates_cpu);
  smooth_load_stub.set(DeviceType::cpu, &smooth_load_cpu);
  smooth_load_backward_stub.set(DeviceType::cpu, &smooth_load_backward_cpu);
}

}  // namespace hmoe::ops::cpu
