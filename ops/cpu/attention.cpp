// CPU kernels of the attention family: causal attention forward/backward (query
// blocks against all earlier keys through single-threaded BLAS) and dropout.
#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "engine/thread_pool.h"
#include "ops/attention_kernels.h"
#include "ops/cpu/fast_math.h"
#include "ops/cpu/row_simd.h"
#include "ops/dispatch.h"

namespace hmoe::ops::cpu {
namespace {

// Queries per block. A block's scores against keys [0, i1) sit in a kBq x T buffer;
// 64 rows keep the BLAS calls efficient while wasting only the diagonal half-block
// (measured against 32 and 128 at T = 256..1024, Dh = 32..64).
constexpr int64_t kBq = 64;

// Row-major C = alpha op(A) op(B) + beta C; OpenBLAS is single-threaded (set at
// registration), so this is safe and deterministic inside parallel_for.
template <typename C>
void mm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, C alpha, const C* a, int64_t lda, const C* b, int64_t ldb,
        C beta, C* c, int64_t ldc) {
  const auto ota = ta ? CblasTrans : CblasNoTrans, otb = tb ? CblasTrans : CblasNoTrans;
  if constexpr (std::is_same_v<C, float>)
    cblas_sgemm(CblasRowMajor, ota, otb, int(m), int(n), int(k), alpha, a, int(lda), b, int(ldb), beta, c, int(ldc));
  else
    cblas_dgemm(CblasRowMajor, ota, otb, int(m), int(n), int(k), alpha, a, int(lda), b, int(ldb), beta, c, int(ldc));
}

// One head of a [B, H, T, Dh] tensor: base pointer and the row stride.
template <typename T>
struct Head {
  T* p;
  int64_t row;
};

template <typename T>
Head<T> head(const Tensor& t, int64_t b, int64_t h) {
  return {t.data_ptr<T>() + b * t.stride(0) + h * t.stride(1), t.stride(2)};
}

// Rows [r0, r1) of a head, widened to the compute type, into a packed [rows, D] buffer.
template <typename T, typename C>
void gather(Head<T> src, int64_t r0, int64_t r1, int64_t D, C* dst) {
  for (int64_t r = r0; r < r1; ++r) {
    const T* s = src.p + r * src.row;
    C* d = dst + (r - r0) * D;
    for (int64_t j = 0; j < D; ++j) d[j] = C(s[j]);
  }
}

template <typename T, typename C>
void scatter(const C* src, int64_t r0, int64_t r1, int64_t D, Head<T> dst) {
  for (int64_t r = r0; r < r1; ++r) {
    const C* s = src + (r - r0) * D;
    T* d = dst.p + r * dst.row;
    for (int64_t j = 0; j < D; ++j) d[j] = T(s[j]);
  }
}

// Row max and row sum with 16 independent lanes (vectorisable; a carried scalar
// accumulator is not) combined in a fixed order, so the result is reproducible.
constexpr int kLanes = 16;

template <typename C>
C row_sum(const C* x, int64_t n) {
  C part[kLanes] = {};
  int64_t j = 0;
  for (; j + kLanes <= n; j += kLanes)
    for (int l = 0; l < kLanes; ++l) part[l] += x[j + l];
  for (; j < n; ++j) part[0] += x[j];
  for (int w = kLanes / 2; w > 0; w /= 2)  // pairwise tree
    for (int l = 0; l < w; ++l) part[l] += part[l + w];
  return part[0];
}

template <typename T>
void forward_typed(const Tensor& q, const Tensor& k, const Tensor& v, double scale, const Tensor& out,
                   const Tensor& lse) {
  using C = compute_t<T>;
  const int64_t B = q.size(0), H = q.size(1), Tn = q.size(2), D = q.size(3);
  const int64_t nqb = (Tn + kBq - 1) / kBq;
  // Tasks are (head, query block): every output row is computed alone, so the thread
  // count cannot change a bit.
  parallel_for(B * H * nqb, 1, [&](int64_t lo, int64_t hi) {
    std::vector<C> qb(static_cast<size_t>(kBq * D)), kv(static_cast<size_t>(Tn * D)),
        s(static_cast<size_t>(kBq * Tn)), ob(static_cast<size_t>(kBq * D));
    for (int64_t task = lo; task < hi; ++task) {
      const int64_t bh = task / nqb, i0 = (task % nqb) * kBq;
      const int64_t b = bh / H, h = bh % H;
      const int64_t i1 = std::min(Tn, i0 + kBq), nq = i1 - i0, nk = i1;
      gather(head<T>(q, b, h), i0, i1, D, qb.data());
      gather(head<T>(k, b, h), 0, nk, D, kv.data());
      // S = scale Q K^T over keys [0, i1); entries above the diagonal are masked below.
      mm<C>(false, true, nq, nk, D, C(scale), qb.data(), D, kv.data(), D, C(0), s.data(), nk);
      C* lrow = lse.data_ptr<C>() + bh * Tn;
      for (int64_t r = 0; r < nq; ++r) {
        C* row = s.data() + r * nk;
        const int64_t n_valid = i0 + r + 1;  // keys 0..i
        const C mx = row_max_value<C>(row, n_valid);
        for (int64_t j = 0; j < n_valid; ++j) row[j] = exp_<C>(row[j] - mx);
        const C sum = row_sum(row, n_valid);
        const C inv = C(1) / sum;
        for (int64_t j = 0; j < n_valid; ++j) row[j] *= inv;
        std::fill(row + n_valid, row + nk, C(0));
        lrow[i0 + r] = mx + std::log(sum);
      }
      gather(head<T>(v, b, h), 0, nk, D, kv.data());
      mm<C>(false, false, nq, D, nk, C(1), s.data(), nk, kv.data(), D, C(0), ob.data(), D);
      scatter(ob.data(), i0, i1, D, head<T>(out, b, h));
    }
  });
}

template <typename T>
void backward_typed(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& o, const Tensor& go,
                    const Tensor& lse, double scale, const Tensor& dq, const Tensor& dk, const Tensor& dv) {
  using C = compute_t<T>;
  const int64_t B = q.size(0), H = q.size(1), Tn = q.size(2), D = q.size(3);
  const C sc = C(scale);
  // One task per head: dK and dV sum over query blocks in a fixed order.
  parallel_for(B * H, 1, [&](int64_t lo, int64_t hi) {
    const size_t td = static_cast<size_t>(Tn * D), bd = static_cast<size_t>(kBq * D);
    std::vector<C> kk(td), vv(td), dkk(td), dvv(td), qb(bd), ob(bd), gb(bd), dqb(bd), drow(static_cast<size_t>(kBq));
    std::vector<C> p(static_cast<size_t>(kBq * Tn)), dp(static_cast<size_t>(kBq * Tn));
    for (int64_t bh = lo; bh < hi; ++bh) {
      const int64_t b = bh / H, h = bh % H;
      gather(head<T>(k, b, h), 0, Tn, D, kk.data());
      gather(head<T>(v, b, h), 0, Tn, D, vv.data());
      std::fill(dkk.begin(), dkk.end(), C(0));
      std::fill(dvv.begin(), dvv.end(), C(0));
      const C* lrow = lse.data_ptr<C>() + bh * Tn;
      for (int64_t i0 = 0; i0 < Tn; i0 += kBq) {
        const int64_t i1 = std::min(Tn, i0 + kBq), nq = i1 - i0, nk = i1;
        gather(head<T>(q, b, h), i0, i1, D, qb.data());
        gather(head<T>(o, b, h), i0, i1, D, ob.data());
        gather(head<T>(go, b, h), i0, i1, D, gb.data());
        for (int64_t r = 0; r < nq; ++r) {  // D_i = dO_i . O_i
          C acc = 0;
          for (int64_t j = 0; j < D; ++j) acc += gb[size_t(r * D + j)] * ob[size_t(r * D + j)];
          drow[size_t(r)] = acc;
        }
        // P = exp(scale Q K^T - lse), zero above the diagonal.
        mm<C>(false, true, nq, nk, D, sc, qb.data(), D, kk.data(), D, C(0), p.data(), nk);
        for (int64_t r = 0; r < nq; ++r) {
          C* row = p.data() + r * nk;
          const int64_t n_valid = i0 + r + 1;
          const C l = lrow[i0 + r];
          for (int64_t j = 0; j < n_valid; ++j) row[j] = exp_<C>(row[j] - l);
          std::fill(row + n_valid, row + nk, C(0));
        }
        // dV += P^T dO ; dP = dO V^T ; dS = P (dP - D_i) ; dQ = scale dS K ; dK += scale dS^T Q.
        mm<C>(true, false, nk, D, nq, C(1), p.data(), nk, gb.data(), D, C(1), dvv.data(), D);
        mm<C>(false, true, nq, nk, D, C(1), gb.data(), D, vv.data(), D, C(0), dp.data(), nk);
        for (int64_t r = 0; r < nq; ++r) {
          C* prow = p.data() + r * nk;
          C* drw = dp.data() + r * nk;
          const C di = drow[size_t(r)];
          for (int64_t j = 0; j < nk; ++j) drw[j] = prow[j] * (drw[j] - di);
        }
        mm<C>(false, false, nq, D, nk, sc, dp.data(), nk, kk.data(), D, C(0), dqb.data(), D);
        mm<C>(true, false, nk, D, nq, sc, dp.data(), nk, qb.data(), D, C(1), dkk.data(), D);
        scatter(dqb.data(), i0, i1, D, head<T>(dq, b, h));
      }
      scatter(dkk.data(), 0, Tn, D, head<T>(dk, b, h));
      scatter(dvv.data(), 0, Tn, D, head<T>(dv, b, h));
    }
  });
}

void attention_forward_cpu(const Tensor& q, const Tensor& k, const Tensor& v, double scale, const Tensor& out,
                           const Tensor& lse) {
  detail::dispatch_float(q.dtype(), "causal_attention", [&]<typename T>() { forward_typed<T>(q, k, v, scale, out, lse); });
}

void attention_backward_cpu(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& o, const Tensor& go,
                            const Tensor& lse, double scale, const Tensor& dq, const Tensor& dk, const Tensor& dv) {
  detail::dispatch_float(q.dtype(), "causal_attention_backward",
                         [&]<typename T>() { backward_typed<T>(q, k, v, o, go, lse, scale, dq, dk, dv); });
}

void dropout_cpu(const Tensor& in, const Tensor& out, double p, uint64_t seed, uint64_t offset) {
  detail::dispatch_float(in.dtype(), "dropout", [&]<typename T>() {
    using C = compute_t<T>;
    const T* x = in.data_ptr<T>();
    T* y = out.data_ptr<T>();
    const float pf = float(p);
    const C s = C(1.0 / (1.0 - p));
    parallel_for(in.numel(), 1 << 14, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i)
        y[i] = dropout_keep(seed, offset, uint64_t(i), pf) ? T(C(x[i]) * s) : T(C(0));
    });
  });
}

}  // namespace

void register_attention_cpu() {
  attention_forward_stub.set(DeviceType::cpu, &attention_forward_cpu);
  attention_backward_stub.set(DeviceType::cpu, &attention_backward_cpu);
  dropout_stub.set(DeviceType::cpu, &dropout_cpu);
}

}  // namespace hmoe::ops::cpu
