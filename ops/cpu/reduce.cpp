// CPU reduction kernel over a contiguous [outer, red, inner] view: sum, max/min,
// argmax/argmin, logsumexp. Every output has one fixed accumulation order (lanes and
// chunks depend on the shape only), so results never depend on the thread count.
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "ops/cpu/fast_math.h"
#include "ops/cpu/loops.h"
#include "ops/cpu/row_simd.h"
#include "ops/dispatch.h"
#include "ops/reduce.h"
#include "ops/reduce_kernels.h"

namespace hmoe::ops::cpu {
namespace {

// Sums of floats accumulate in double, of integers in i64; max/min work in compute_t.
template <typename T>
using acc_t = std::conditional_t<std::is_integral_v<compute_t<T>>, int64_t, double>;

constexpr int kLanes = 16;        // independent partials per row: vectorisable, fixed order
constexpr int64_t kBlock = 256;   // inner columns handled together by one task
constexpr int64_t kSplit = 65536; // a long row of a small reduction is cut into chunks of this

template <typename A, int N>
A combine_lanes(const A (&p)[N]) {
  // Pairwise in a fixed tree.
  A q[N];
  for (int j = 0; j < N; ++j) q[j] = p[j];
  for (int w = N / 2; w >= 1; w /= 2)
    for (int j = 0; j < w; ++j) q[j] = q[j] + q[j + w];
  return q[0];
}

template <typename T>
acc_t<T> sum_row(const T* x, int64_t n) {
  using A = acc_t<T>;
  A part[kLanes] = {};
  int64_t r = 0;
  for (; r + kLanes <= n; r += kLanes)
    for (int j = 0; j < kLanes; ++j) part[j] += A(compute_t<T>(x[r + j]));
  for (int j = 0; r < n; ++r, ++j) part[j] += A(compute_t<T>(x[r]));
  return combine_lanes(part);
}

template <typename T>
std::pair<compute_t<T>, int64_t> arg_extreme_row(const T* x, int64_t n, bool is_max) {
  return is_max ? row_arg_extreme<true, compute_t<T>>(x, n) : row_arg_extreme<false, compute_t<T>>(x, n);
}

// (max, sum of exp(x - max)) of a row, in the compute type (float or double).
template <typename T>
std::pair<compute_t<T>, compute_t<T>> lse_parts_row(const T* x, int64_t n) {
  using C = compute_t<T>;
  const C m = row_max_value<C>(x, n);
  if (!std::isfinite(m)) return {m, C(1)};
  C part[kLanes] = {};
  int64_t r = 0;
  for (; r + kLanes <= n; r += kLanes)
    for (int j = 0; j < kLanes; ++j) part[j] += exp_nonpos<C>(C(x[r + j]) - m);
  for (int j = 0; r < n; ++r, ++j) part[j] += exp_nonpos<C>(C(x[r]) - m);
  return {m, combine_lanes(part)};
}

template <typename C>
C lse_finish(C m, C s) {
  return std::isfinite(m) ? m + std::log(s) : m;
}

template <typename T>
void reduce_rows(ReduceOp op, const T* x, T* y, int64_t* yi, int64_t o, int64_t red) {
  const T* row = x + o * red;
  switch (op) {
    case ReduceOp::sum: y[o] = T(compute_t<T>(sum_row(row, red))); break;
    case ReduceOp::max:
    case ReduceOp::min: y[o] = T(arg_extreme_row(row, red, op == ReduceOp::max).first); break;
    case ReduceOp::argmax:
    case ReduceOp::argmin: yi[o] = arg_extreme_row(row, red, op == ReduceOp::argmax).second; break;
    case ReduceOp::logsumexp: {
      if constexpr (std::is_floating_point_v<compute_t<T>>) {
        const auto [m, s] = lse_parts_row(row, red);
        y[o] = T(lse_finish(m, s));
      }
      break;
    }
  }
}

// One [red, w] column block at x (row stride `inner`): results into y / yi (stride 1).
template <typename T>
void reduce_block(ReduceOp op, const T* x, T* y, int64_t* yi, int64_t red, int64_t inner, int64_t w) {
  using A = acc_t<T>;
  using C = compute_t<T>;
  switch (op) {
    case ReduceOp::sum: {
      A acc[kBlock] = {};
      for (int64_t r = 0; r < red; ++r) {
        const T* row = x + r * inner;
        for (int64_t i = 0; i < w; ++i) acc[i] += A(C(row[i]));
      }
      for (int64_t i = 0; i < w; ++i) y[i] = T(C(acc[i]));
      break;
    }
    case ReduceOp::max:
    case ReduceOp::min:
    case ReduceOp::argmax:
    case ReduceOp::argmin: {
      const bool is_max = op == ReduceOp::max || op == ReduceOp::argmax;
      C acc[kBlock];
      int64_t arg[kBlock] = {};
      for (int64_t i = 0; i < w; ++i) acc[i] = C(x[i]);
      for (int64_t r = 1; r < red; ++r) {
        const T* row = x + r * inner;
        for (int64_t i = 0; i < w; ++i) {
          const C v = C(row[i]);
          const bool take = !nan_(acc[i]) && (nan_(v) || (is_max ? v > acc[i] : v < acc[i]));
          acc[i] = take ? v : acc[i];
          arg[i] = take ? r : arg[i];
        }
      }
      for (int64_t i = 0; i < w; ++i) {
        if (yi) yi[i] = arg[i];
        else y[i] = T(acc[i]);
      }
      break;
    }
    case ReduceOp::logsumexp: {
      if constexpr (std::is_floating_point_v<C>) {
        C m[kBlock];
        C s[kBlock] = {};
        for (int64_t i = 0; i < w; ++i) m[i] = -std::numeric_limits<C>::infinity();
        for (int64_t r = 0; r < red; ++r)
          for (int64_t i = 0; i < w; ++i) m[i] = std::max(m[i], C(x[r * inner + i]));
        C mm[kBlock];  // the shift; non-finite maxima are the answer themselves (exp terms -> 0)
        for (int64_t i = 0; i < w; ++i) mm[i] = std::isfinite(m[i]) ? m[i] : std::numeric_limits<C>::infinity();
        for (int64_t r = 0; r < red; ++r)
          for (int64_t i = 0; i < w; ++i) s[i] += exp_nonpos<C>(C(x[r * inner + i]) - mm[i]);
        for (int64_t i = 0; i < w; ++i) y[i] = T(lse_finish(m[i], s[i]));
      }
      break;
    }
  }
}

// A few long rows: each row is cut into fixed kSplit chunks reduced in parallel, and
// the chunk results are combined in order.
template <typename T>
void reduce_split_rows(ReduceOp op, const T* x, T* y, int64_t* yi, int64_t outer, int64_t red) {
  using A = acc_t<T>;
  using C = compute_t<T>;
  const int64_t nc = chunk_count(red, kSplit);
  std::vector<A> psum(static_cast<size_t>(outer * nc));
  std::vector<C> pval(static_cast<size_t>(outer * nc)), paux(static_cast<size_t>(outer * nc));
  std::vector<int64_t> pidx(static_cast<size_t>(outer * nc));
  const bool is_max = op == ReduceOp::max || op == ReduceOp::argmax;
  parallel_for(outer * nc, 1, [&](int64_t b, int64_t e) {
    for (int64_t t = b; t < e; ++t) {
      const int64_t o = t / nc, c = t % nc;
      const int64_t r0 = c * kSplit, n = std::min(kSplit, red - r0);
      const T* p = x + o * red + r0;
      switch (op) {
        case ReduceOp::sum: psum[size_t(t)] = sum_row(p, n); break;
        case ReduceOp::max:
        case ReduceOp::min:
        case ReduceOp::argmax:
        case ReduceOp::argmin: {
          const auto [v, i] = arg_extreme_row(p, n, is_max);
          pval[size_t(t)] = v;
          pidx[size_t(t)] = r0 + i;
          break;
        }
        case ReduceOp::logsumexp:
          if constexpr (std::is_floating_point_v<C>) {
            const auto [m, s] = lse_parts_row(p, n);
            pval[size_t(t)] = m;
            paux[size_t(t)] = s;
          }
          break;
      }
    }
  });
  for (int64_t o = 0; o < outer; ++o) {
    const size_t b = size_t(o * nc);
    switch (op) {
      case ReduceOp::sum: {
        A s = 0;
        for (int64_t c = 0; c < nc; ++c) s += psum[b + size_t(c)];
        y[o] = T(C(s));
        break;
      }
      case ReduceOp::max:
      case ReduceOp::min:
      case ReduceOp::argmax:
      case ReduceOp::argmin: {
        // Chunks in order; a later chunk wins only when strictly better (first index).
        C v = pval[b];
        int64_t at = pidx[b];
        for (int64_t c = 1; c < nc; ++c) {
          const C nv = pval[b + size_t(c)];
          if (!nan_(v) && (nan_(nv) || (is_max ? nv > v : nv < v))) {
            v = nv;
            at = pidx[b + size_t(c)];
          }
        }
        if (op == ReduceOp::max || op == ReduceOp::min) y[o] = T(v);
        else yi[o] = at;
        break;
      }
      case ReduceOp::logsumexp:
        if constexpr (std::is_floating_point_v<C>) {
          C m = -std::numeric_limits<C>::infinity();
          for (int64_t c = 0; c < nc; ++c) m = std::max(m, pval[b + size_t(c)]);
          if (!std::isfinite(m)) {
            y[o] = T(m);
            break;
          }
          A s = 0;
          for (int64_t c = 0; c < nc; ++c) s += A(paux[b + size_t(c)]) * std::exp(A(pval[b + size_t(c)] - m));
          y[o] = T(C(A(m) + std::log(s)));
        }
        break;
    }
  }
}

template <typename T>
void reduce_typed(ReduceOp op, const Tensor& in, const Tensor& out, int64_t outer, int64_t red, int64_t inner) {
  const T* x = in.data_ptr<T>();
  const bool index_out = op == ReduceOp::argmax || op == ReduceOp::argmin;
  T* y = index_out ? nullptr : out.data_ptr<T>();
  int64_t* yi = index_out ? out.data_ptr<int64_t>() : nullptr;
  if (outer * inner == 0) return;
  if (op != ReduceOp::sum && op != ReduceOp::logsumexp)
    HMOE_CHECK(red > 0, "max/min: cannot reduce over an empty dimension");
  if (op == ReduceOp::logsumexp && !std::is_floating_point_v<compute_t<T>>) detail::unsupported_dtype("logsumexp", in.dtype());
  if (inner == 1) {
    // The split depends on the shape only, so it is the same for any thread count.
    if (outer < 4 && red >= 2 * kSplit) return reduce_split_rows(op, x, y, yi, outer, red);
    parallel_for(outer, std::max<int64_t>(1, kGrain / std::max<int64_t>(red, 1)), [&](int64_t b, int64_t e) {
      for (int64_t o = b; o < e; ++o) reduce_rows(op, x, y, yi, o, red);
    });
    return;
  }
  const int64_t nb = chunk_count(inner, kBlock);
  const int64_t per_task = std::max<int64_t>(red * std::min(inner, kBlock), 1);
  parallel_for(outer * nb, std::max<int64_t>(1, kGrain / per_task), [&](int64_t b, int64_t e) {
    for (int64_t t = b; t < e; ++t) {
      const int64_t o = t / nb, i0 = (t % nb) * kBlock, w = std::min(kBlock, inner - i0);
      const int64_t off = o * inner + i0;
      reduce_block(op, x + o * red * inner + i0, y ? y + off : nullptr, yi ? yi + off : nullptr, red, inner, w);
    }
  });
}

void reduce_cpu(ReduceOp op, const Tensor& in, const Tensor& out, int64_t outer, int64_t red, int64_t inner) {
  detail::dispatch_numeric(in.dtype(), "reduce",
                           [&]<typename T>() { reduce_typed<T>(op, in, out, outer, red, inner); });
}

}  // namespace

void register_reduce_cpu() {
  reduce_stub.set(DeviceType::cpu, &reduce_cpu);
}

}  // namespace hmoe::ops::cpu
